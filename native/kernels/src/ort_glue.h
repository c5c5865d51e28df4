// C++ conveniences over the declared C ABI: typed calls by table position, errors as exceptions inside
// the library (turned back into OrtStatus at the boundary), and onnxruntime's thread pool as a Parallel.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "ort_abi.h"

namespace onnxopt {

// An error to report to onnxruntime as a failed status with this message.
class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Api {
 public:
  explicit Api(const OrtApi* api) : api_(api) {}
  const OrtApi* raw() const { return api_; }

  OrtStatus* make_status(int code, const char* message) const;

  // Attributes (absent -> fallback).
  int64_t attr_int(const OrtKernelInfo* info, const char* name, int64_t fallback) const;
  float attr_float(const OrtKernelInfo* info, const char* name, float fallback) const;
  std::vector<int64_t> attr_ints(const OrtKernelInfo* info, const char* name) const;

  size_t info_input_count(const OrtKernelInfo* info) const;
  // The input's value when it is a constant initializer, else null (also for an omitted optional input).
  const OrtValue* constant_input(const OrtKernelInfo* info, size_t index) const;

  size_t input_count(const OrtKernelContext* context) const;
  // Null when the optional input is absent.
  const OrtValue* input(const OrtKernelContext* context, size_t index) const;
  std::vector<int64_t> shape(const OrtValue* value) const;
  int element_type(const OrtValue* value) const;
  const float* data(const OrtValue* value) const;
  float* output(OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) const;

  void parallel_for(const OrtKernelContext* context, size_t total, void (*fn)(void*, size_t), void* user) const;

 private:
  void check(OrtStatus* status) const;  // throws KernelError with the status message (and releases it)
  template <typename Fn>
  Fn fn(ort_abi::Entry entry) const {
    return ort_abi::entry<Fn>(api_, entry);
  }
  const OrtApi* api_;
};

// onnxruntime's intra-op thread pool, through KernelContext_ParallelFor. Work too small to amortise
// waking the pool (`flops` below kSerialFlops) runs on the calling thread instead.
class OrtParallel final : public Parallel {
 public:
  static constexpr double kSerialFlops = 4e6;

  OrtParallel(const Api& api, const OrtKernelContext* context, double flops)
      : api_(api), context_(context), serial_(flops < kSerialFlops) {}
  void run(size_t total, void (*fn)(void*, size_t), void* user) const override {
    if (serial_) {
      for (size_t i = 0; i < total; ++i) fn(user, i);
      return;
    }
    api_.parallel_for(context_, total, fn, user);
  }

 private:
  const Api& api_;
  const OrtKernelContext* context_;
  bool serial_;
};

}  // namespace onnxopt
