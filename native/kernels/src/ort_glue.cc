#include "ort_glue.h"

namespace onnxopt {

using ort_abi::Entry;

OrtStatus* Api::make_status(int code, const char* message) const {
  return fn<OrtStatus* (*)(int, const char*)>(Entry::CreateStatus)(code, message);
}

void Api::check(OrtStatus* status) const {
  if (status == nullptr) return;
  const char* message = fn<const char* (*)(const OrtStatus*)>(Entry::GetErrorMessage)(status);
  std::string text = message ? message : "onnxruntime call failed";
  fn<void (*)(OrtStatus*)>(Entry::ReleaseStatus)(status);
  throw KernelError(text);
}

int64_t Api::attr_int(const OrtKernelInfo* info, const char* name, int64_t fallback) const {
  int64_t value = 0;
  OrtStatus* status =
      fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*)>(Entry::KernelInfoGetAttribute_int64)(info, name,
                                                                                                           &value);
  if (status != nullptr) {
    fn<void (*)(OrtStatus*)>(Entry::ReleaseStatus)(status);
    return fallback;
  }
  return value;
}

float Api::attr_float(const OrtKernelInfo* info, const char* name, float fallback) const {
  float value = 0;
  OrtStatus* status =
      fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, float*)>(Entry::KernelInfoGetAttribute_float)(info, name,
                                                                                                         &value);
  if (status != nullptr) {
    fn<void (*)(OrtStatus*)>(Entry::ReleaseStatus)(status);
    return fallback;
  }
  return value;
}

std::vector<int64_t> Api::attr_ints(const OrtKernelInfo* info, const char* name) const {
  using Getter = OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*, size_t*);
  auto get = fn<Getter>(Entry::KernelInfoGetAttributeArray_int64);
  size_t size = 0;
  OrtStatus* status = get(info, name, nullptr, &size);  // asks for the size first
  if (status != nullptr) {
    fn<void (*)(OrtStatus*)>(Entry::ReleaseStatus)(status);
    return {};
  }
  std::vector<int64_t> values(size);
  if (size > 0) check(get(info, name, values.data(), &size));
  return values;
}

size_t Api::info_input_count(const OrtKernelInfo* info) const {
  size_t count = 0;
  check(fn<OrtStatus* (*)(const OrtKernelInfo*, size_t*)>(Entry::KernelInfo_GetInputCount)(info, &count));
  return count;
}

const OrtValue* Api::constant_input(const OrtKernelInfo* info, size_t index) const {
  int is_constant = 0;
  const OrtValue* value = nullptr;
  using Getter = OrtStatus* (*)(const OrtKernelInfo*, size_t, int*, const OrtValue**);
  OrtStatus* status = fn<Getter>(Entry::KernelInfoGetConstantInput_tensor)(info, index, &is_constant, &value);
  if (status != nullptr) {  // e.g. an omitted optional input: simply not a constant
    fn<void (*)(OrtStatus*)>(Entry::ReleaseStatus)(status);
    return nullptr;
  }
  return is_constant ? value : nullptr;
}

size_t Api::input_count(const OrtKernelContext* context) const {
  size_t count = 0;
  check(fn<OrtStatus* (*)(const OrtKernelContext*, size_t*)>(Entry::KernelContext_GetInputCount)(context, &count));
  return count;
}

const OrtValue* Api::input(const OrtKernelContext* context, size_t index) const {
  if (index >= input_count(context)) return nullptr;
  const OrtValue* value = nullptr;
  using Getter = OrtStatus* (*)(const OrtKernelContext*, size_t, const OrtValue**);
  check(fn<Getter>(Entry::KernelContext_GetInput)(context, index, &value));
  return value;
}

std::vector<int64_t> Api::shape(const OrtValue* value) const {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  using GetInfo = OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**);
  check(fn<GetInfo>(Entry::GetTensorTypeAndShape)(value, &info));
  size_t count = 0;
  OrtStatus* status =
      fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(Entry::GetDimensionsCount)(info, &count);
  std::vector<int64_t> dims(count);
  if (status == nullptr && count > 0)
    status = fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(Entry::GetDimensions)(
        info, dims.data(), count);
  fn<void (*)(OrtTensorTypeAndShapeInfo*)>(Entry::ReleaseTensorTypeAndShapeInfo)(info);
  check(status);
  return dims;
}

int Api::element_type(const OrtValue* value) const {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  using GetInfo = OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**);
  check(fn<GetInfo>(Entry::GetTensorTypeAndShape)(value, &info));
  int type = 0;
  OrtStatus* status =
      fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int*)>(Entry::GetTensorElementType)(info, &type);
  fn<void (*)(OrtTensorTypeAndShapeInfo*)>(Entry::ReleaseTensorTypeAndShapeInfo)(info);
  check(status);
  return type;
}

const float* Api::data(const OrtValue* value) const {
  void* pointer = nullptr;
  check(fn<OrtStatus* (*)(OrtValue*, void**)>(Entry::GetTensorMutableData)(const_cast<OrtValue*>(value), &pointer));
  return static_cast<const float*>(pointer);
}

float* Api::output(OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) const {
  OrtValue* value = nullptr;
  using Getter = OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**);
  check(fn<Getter>(Entry::KernelContext_GetOutput)(context, index, shape.data(), shape.size(), &value));
  void* pointer = nullptr;
  check(fn<OrtStatus* (*)(OrtValue*, void**)>(Entry::GetTensorMutableData)(value, &pointer));
  return static_cast<float*>(pointer);
}

void Api::parallel_for(const OrtKernelContext* context, size_t total, void (*body)(void*, size_t), void* user) const {
  using Runner = OrtStatus* (*)(const OrtKernelContext*, void (*)(void*, size_t), size_t, size_t, void*);
  check(fn<Runner>(Entry::KernelContext_ParallelFor)(context, body, total, 0, user));
}

}  // namespace onnxopt
