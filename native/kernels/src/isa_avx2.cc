// The kernels compiled for the avx2 level: 8 floats per vector, a 6 x 16 GEMM register tile.
// Built with the flags CMakeLists.txt gives this file; only called after dispatch.cc checked the CPU.
#include "isa_prelude.h"

namespace onnxopt::isa_avx2 {

constexpr int VL = 8;
constexpr int MR = 6;
constexpr int NR = 16;
constexpr const char* kIsaName = "avx2";
typedef float vf __attribute__((vector_size(32)));
typedef float vf_unaligned __attribute__((vector_size(32), aligned(4)));

inline vf vload(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
inline void vstore(float* p, vf v) { *reinterpret_cast<vf_unaligned*>(p) = v; }
inline vf vzero() { return vf{}; }
inline vf vset1(float s) { return vzero() + s; }

#include "kernels_impl.inc"

}  // namespace onnxopt::isa_avx2

namespace onnxopt {
const KernelTable* table_avx2() { return &isa_avx2::kTable; }
}  // namespace onnxopt
