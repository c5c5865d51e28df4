// The kernels compiled as plain scalar C++ (one float per "vector"): the fallback for any CPU, and the
// reference the vector levels are tested against. Built without auto-vectorisation.
#include "isa_prelude.h"

namespace onnxopt::isa_scalar {

constexpr int VL = 1;
constexpr int MR = 4;
constexpr int NR = 4;
constexpr const char* kIsaName = "scalar";
using vf = float;

inline vf vload(const float* p) { return *p; }
inline void vstore(float* p, vf v) { *p = v; }
inline vf vzero() { return 0.f; }
inline vf vset1(float s) { return s; }

#include "kernels_impl.inc"

}  // namespace onnxopt::isa_scalar

namespace onnxopt {
const KernelTable* table_scalar() { return &isa_scalar::kTable; }
}  // namespace onnxopt
