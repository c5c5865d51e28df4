// The kernels compiled for the avx512 level: 16 floats per vector, a 12 x 32 GEMM register tile.
// Built with the flags CMakeLists.txt gives this file; only called after dispatch.cc checked the CPU.
#include "isa_prelude.h"

namespace onnxopt::isa_avx512 {

constexpr int VL = 16;
constexpr int MR = 12;
constexpr int NR = 32;
constexpr const char* kIsaName = "avx512";
typedef float vf __attribute__((vector_size(64)));
typedef float vf_unaligned __attribute__((vector_size(64), aligned(4)));

inline vf vload(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
inline void vstore(float* p, vf v) { *reinterpret_cast<vf_unaligned*>(p) = v; }
inline vf vzero() { return vf{}; }
inline vf vset1(float s) { return vzero() + s; }

#include "kernels_impl.inc"

}  // namespace onnxopt::isa_avx512

namespace onnxopt {
const KernelTable* table_avx512() { return &isa_avx512::kTable; }
}  // namespace onnxopt
