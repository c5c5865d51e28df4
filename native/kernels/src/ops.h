// The custom ops: a descriptor per registered op name, and the kernel objects onnxruntime creates.
#pragma once

#include <memory>

#include "ort_abi.h"
#include "ort_glue.h"

namespace onnxopt {

enum class OpKind { kWinograd, kFft, kStrassen };

// One registered op. OrtCustomOp must stay the first base: onnxruntime hands us back its address.
struct OpDescriptor : OrtCustomOp {
  const char* name;
  OpKind kind;
  bool residual;   // the op takes a residual input added before the activation
  int activation;  // Activation
};

// Kernel objects behind the void* onnxruntime stores; compute throws KernelError on bad input.
class KernelBase {
 public:
  explicit KernelBase(const OrtApi* api) : api_(api) {}
  virtual ~KernelBase() = default;
  virtual void compute(OrtKernelContext* context) = 0;
  const Api& api() const { return api_; }

 protected:
  Api api_;
};

std::unique_ptr<KernelBase> make_conv_kernel(const OpDescriptor& op, const OrtApi* api, const OrtKernelInfo* info);
std::unique_ptr<KernelBase> make_strassen_kernel(const OpDescriptor& op, const OrtApi* api,
                                                 const OrtKernelInfo* info);

}  // namespace onnxopt
