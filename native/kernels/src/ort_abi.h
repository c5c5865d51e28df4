// The part of onnxruntime's stable C ABI that this library uses, declared here in our own words.
//
// Why not include onnxruntime's header: the Python wheel ships no C headers and no registry package
// carries them. The ABI is stable by design: OrtApi is a table of function pointers that only ever
// grows at its end, so an entry keeps its position forever, and a library asks for the table of the
// version it was written against (`GetApi(version)`), which newer runtimes keep serving.
//
// What is declared:
//   * OrtApiBase: the two entry points handed to `RegisterCustomOps`.
//   * OrtApi: not as a struct but as an array of pointers read by position (`Entry` below). The
//     positions are the documented order of the table; tests load this library into the installed
//     onnxruntime and exercise every entry we name.
//   * OrtCustomOp: the struct we fill for each op; its layout up to the fields of version 17.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// Opaque handles owned by onnxruntime.
struct OrtStatus;
struct OrtApi;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtShapeInferContext;

struct OrtApiBase {
  // Null when the runtime does not serve `version` (it is older than the version we ask for).
  const OrtApi* (*GetApi)(uint32_t version) noexcept;
  const char* (*GetVersionString)() noexcept;
};

// The version of the OrtApi table and of OrtCustomOp we are written against: 1.17 added
// KernelContext_ParallelFor, the newest entry we use.
constexpr uint32_t kOrtApiVersion = 17;

// ONNX element types and the few enum values we use (C enums are int-sized on every supported ABI).
constexpr int kElementFloat = 1;
constexpr int kErrorFail = 1;              // OrtErrorCode ORT_FAIL
constexpr int kErrorInvalidArgument = 2;   // OrtErrorCode ORT_INVALID_ARGUMENT
constexpr int kCharacteristicRequired = 0; // OrtCustomOpInputOutputCharacteristic
constexpr int kCharacteristicOptional = 1;
constexpr int kMemTypeDefault = 0;         // OrtMemType

struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info);
  const char* (*GetName)(const OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const OrtCustomOp* op);
  int (*GetInputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const OrtCustomOp* op);
  int (*GetOutputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const OrtCustomOp* op);
  void (*KernelCompute)(void* kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* kernel);
  int (*GetInputCharacteristic)(const OrtCustomOp* op, size_t index);
  int (*GetOutputCharacteristic)(const OrtCustomOp* op, size_t index);
  int (*GetInputMemoryType)(const OrtCustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const OrtCustomOp* op);
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp* op);
  int (*GetVariadicOutputMinArity)(const OrtCustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp* op);
  OrtStatus* (*CreateKernelV2)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel);
  OrtStatus* (*KernelComputeV2)(void* kernel, OrtKernelContext* context);
  OrtStatus* (*InferOutputShapeFn)(const OrtCustomOp* op, OrtShapeInferContext* context);
  int (*GetStartVersion)(const OrtCustomOp* op);
  int (*GetEndVersion)(const OrtCustomOp* op);
  // Later versions append more fields; with version 17 the runtime never reads past this point.
};

}  // extern "C"

static_assert(sizeof(void*) != 8 || offsetof(OrtCustomOp, CreateKernelV2) == 136, "OrtCustomOp layout");
static_assert(sizeof(void*) != 8 || offsetof(OrtCustomOp, GetEndVersion) == 168, "OrtCustomOp layout");

namespace ort_abi {

// Positions of the OrtApi entries we call, in the table's documented order.
enum class Entry : size_t {
  CreateStatus = 0,                        // (int code, const char* msg) -> OrtStatus*
  GetErrorMessage = 2,                     // (const OrtStatus*) -> const char*
  CreateCustomOpDomain = 26,               // (const char* domain, OrtCustomOpDomain** out)
  CustomOpDomain_Add = 27,                 // (OrtCustomOpDomain*, const OrtCustomOp*)
  AddCustomOpDomain = 28,                  // (OrtSessionOptions*, OrtCustomOpDomain*)
  GetTensorMutableData = 51,               // (OrtValue*, void** out)
  GetTensorElementType = 60,               // (const OrtTensorTypeAndShapeInfo*, int* out)
  GetDimensionsCount = 61,                 // (const OrtTensorTypeAndShapeInfo*, size_t* out)
  GetDimensions = 62,                      // (const OrtTensorTypeAndShapeInfo*, int64_t* dims, size_t count)
  GetTensorTypeAndShape = 65,              // (const OrtValue*, OrtTensorTypeAndShapeInfo** out)
  KernelInfoGetAttribute_float = 85,       // (const OrtKernelInfo*, const char* name, float* out)
  KernelInfoGetAttribute_int64 = 86,       // (const OrtKernelInfo*, const char* name, int64_t* out)
  KernelContext_GetInputCount = 88,        // (const OrtKernelContext*, size_t* out)
  KernelContext_GetInput = 90,             // (const OrtKernelContext*, size_t index, const OrtValue** out)
  KernelContext_GetOutput = 91,            // (OrtKernelContext*, size_t index, const int64_t* dims, size_t n, OrtValue** out)
  ReleaseStatus = 93,                      // (OrtStatus*) -> void
  ReleaseTensorTypeAndShapeInfo = 99,      // (OrtTensorTypeAndShapeInfo*) -> void
  KernelInfoGetAttributeArray_int64 = 163, // (const OrtKernelInfo*, const char* name, int64_t* out, size_t* size)
  KernelInfo_GetInputCount = 230,          // (const OrtKernelInfo*, size_t* out)               since 1.14
  KernelInfoGetConstantInput_tensor = 249, // (const OrtKernelInfo*, size_t, int* is_const, const OrtValue** out) 1.15
  KernelContext_ParallelFor = 274,         // (const OrtKernelContext*, void (*fn)(void*, size_t), size_t total,
                                           //  size_t max_batches, void* user)                   since 1.17
};

// The entry at `entry` of the table `api`, as a function pointer of type `Fn`.
template <typename Fn>
inline Fn entry(const OrtApi* api, Entry position) {
  auto table = reinterpret_cast<void* const*>(api);
  return reinterpret_cast<Fn>(table[static_cast<size_t>(position)]);
}

}  // namespace ort_abi
