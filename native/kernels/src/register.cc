// The library's entry point: RegisterCustomOps adds the domain com.onnxopt with every op to a session.
//
// Op names encode what is fused after the convolution, one name per function body the pass emits:
//   <Base>[Add][Relu|Clip], Base = WinogradConv or FFTConv
//   inputs X, W, B (optional), R (residual, only in the Add variants); attributes pads, tile (Winograd),
//   group (FFT), clip_min / clip_max (Clip variants)
// and StrassenMatMul (inputs A, B; attribute levels).
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "ops.h"

namespace onnxopt {
namespace {

constexpr const char* kDomain = "com.onnxopt";

const OpDescriptor& descriptor(const OrtCustomOp* op) { return *static_cast<const OpDescriptor*>(op); }

size_t input_count(const OrtCustomOp* op) {
  const OpDescriptor& d = descriptor(op);
  if (d.kind == OpKind::kStrassen) return 2;
  return d.residual ? 4 : 3;
}

int input_characteristic(const OrtCustomOp* op, size_t index) {
  return (descriptor(op).kind != OpKind::kStrassen && index == 2) ? kCharacteristicOptional : kCharacteristicRequired;
}

OrtStatus* create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) {
  *kernel = nullptr;
  try {
    const OpDescriptor& d = descriptor(op);
    std::unique_ptr<KernelBase> created =
        d.kind == OpKind::kStrassen ? make_strassen_kernel(d, api, info) : make_conv_kernel(d, api, info);
    *kernel = created.release();
    return nullptr;
  } catch (const std::exception& error) {
    return Api(api).make_status(kErrorInvalidArgument, error.what());
  }
}

OrtStatus* compute(void* kernel, OrtKernelContext* context) {
  auto* k = static_cast<KernelBase*>(kernel);
  try {
    k->compute(context);
    return nullptr;
  } catch (const KernelError& error) {
    return k->api().make_status(kErrorInvalidArgument, error.what());
  } catch (const std::exception& error) {
    return k->api().make_status(kErrorFail, error.what());
  }
}

OpDescriptor make_descriptor(const char* name, OpKind kind, bool residual, int activation) {
  OpDescriptor d{};
  d.version = kOrtApiVersion;
  d.CreateKernel = nullptr;  // CreateKernelV2 reports errors as statuses instead
  d.GetName = [](const OrtCustomOp* op) { return descriptor(op).name; };
  d.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };  // CPU
  d.GetInputType = [](const OrtCustomOp*, size_t) { return kElementFloat; };
  d.GetInputTypeCount = &input_count;
  d.GetOutputType = [](const OrtCustomOp*, size_t) { return kElementFloat; };
  d.GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  d.KernelCompute = nullptr;  // KernelComputeV2 instead
  d.KernelDestroy = [](void* kernel) { delete static_cast<KernelBase*>(kernel); };
  d.GetInputCharacteristic = &input_characteristic;
  d.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return kCharacteristicRequired; };
  d.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return kMemTypeDefault; };
  d.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  d.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  d.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  d.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  d.CreateKernelV2 = &create_kernel;
  d.KernelComputeV2 = &compute;
  d.InferOutputShapeFn = nullptr;
  d.GetStartVersion = [](const OrtCustomOp*) { return 1; };
  d.GetEndVersion = [](const OrtCustomOp*) { return 1 << 30; };
  d.name = name;
  d.kind = kind;
  d.residual = residual;
  d.activation = activation;
  return d;
}

std::vector<OpDescriptor>& descriptors() {
  static std::vector<OpDescriptor> ops = [] {
    std::vector<OpDescriptor> list;
    static const char* names[2][2][3] = {
        {{"WinogradConv", "WinogradConvRelu", "WinogradConvClip"},
         {"WinogradConvAdd", "WinogradConvAddRelu", "WinogradConvAddClip"}},
        {{"FFTConv", "FFTConvRelu", "FFTConvClip"}, {"FFTConvAdd", "FFTConvAddRelu", "FFTConvAddClip"}}};
    for (int kind = 0; kind < 2; ++kind)
      for (int residual = 0; residual < 2; ++residual)
        for (int act = 0; act < 3; ++act)
          list.push_back(make_descriptor(names[kind][residual][act], kind == 0 ? OpKind::kWinograd : OpKind::kFft,
                                         residual == 1, act));
    list.push_back(make_descriptor("StrassenMatMul", OpKind::kStrassen, false, kActNone));
    return list;
  }();
  return ops;
}

}  // namespace
}  // namespace onnxopt

extern "C" {

// Called by onnxruntime (SessionOptions.register_custom_ops_library). One domain object per call: it must
// outlive the sessions created from these options, so it is deliberately never released.
__attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                    const OrtApiBase* base) {
  using namespace onnxopt;
  if (base == nullptr || base->GetApi == nullptr) return nullptr;  // nothing to report an error through
  const OrtApi* api = base->GetApi(kOrtApiVersion);
  if (api == nullptr) {
    // The runtime is older than the API version we need: we cannot even create a status through it.
    // Fail through the newest API it does serve, if any, with a readable message.
    for (uint32_t version = kOrtApiVersion - 1; version >= 1; --version)
      if (const OrtApi* older = base->GetApi(version))
        return Api(older).make_status(kErrorFail, "onnxopt kernels need onnxruntime >= 1.17 (C API version 17)");
    return nullptr;
  }
  Api wrapped(api);
  try {
    using ort_abi::Entry;
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* status = ort_abi::entry<OrtStatus* (*)(const char*, OrtCustomOpDomain**)>(
            api, Entry::CreateCustomOpDomain)(kDomain, &domain))
      return status;
    for (const OpDescriptor& op : descriptors())
      if (OrtStatus* status = ort_abi::entry<OrtStatus* (*)(OrtCustomOpDomain*, const OrtCustomOp*)>(
              api, Entry::CustomOpDomain_Add)(domain, &op))
        return status;
    return ort_abi::entry<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(api, Entry::AddCustomOpDomain)(
        options, domain);
  } catch (const std::exception& error) {
    return wrapped.make_status(kErrorFail, error.what());
  }
}

}  // extern "C"
