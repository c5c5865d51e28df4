// The kernels compiled for the generic level: 4 floats per vector, a 6 x 8 GEMM register tile.
// Built with the flags CMakeLists.txt gives this file; only called after dispatch.cc checked the CPU.
#include "isa_prelude.h"

namespace onnxopt::isa_generic {

constexpr int VL = 4;
constexpr int MR = 6;
constexpr int NR = 8;
constexpr const char* kIsaName = "generic";
typedef float vf __attribute__((vector_size(16)));
typedef float vf_unaligned __attribute__((vector_size(16), aligned(4)));

inline vf vload(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
inline void vstore(float* p, vf v) { *reinterpret_cast<vf_unaligned*>(p) = v; }
inline vf vzero() { return vf{}; }
inline vf vset1(float s) { return vzero() + s; }

#include "kernels_impl.inc"

}  // namespace onnxopt::isa_generic

namespace onnxopt {
const KernelTable* table_generic() { return &isa_generic::kTable; }
}  // namespace onnxopt
