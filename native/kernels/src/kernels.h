// ISA-neutral interface between the onnxruntime-facing ops and the compute kernels.
//
// Each instruction-set level (AVX-512, AVX2+FMA, a generic 4-lane build, plain scalar) compiles the
// same templated kernels (kernels_impl.inc) with its own vector width and register tile, and exports a
// KernelTable. dispatch.cc picks one table at kernel creation: the best the CPU supports, or a lower
// one forced by ONNXOPT_KERNELS_ISA. Data prepared for one table (packed weights) is used with that
// table only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace onnxopt {

// Runs fn(user, i) for i in [0, total), possibly concurrently (onnxruntime's thread pool).
class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual void run(size_t total, void (*fn)(void*, size_t), void* user) const = 0;

  template <class F>
  void for_each(size_t total, F& body) const {
    if (total == 0) return;
    if (total == 1) {
      body(size_t{0});
      return;
    }
    run(total, [](void* user, size_t index) { (*static_cast<F*>(user))(index); }, &body);
  }
};

// Serial execution, for callers without a pool.
class SerialParallel final : public Parallel {
 public:
  void run(size_t total, void (*fn)(void*, size_t), void* user) const override {
    for (size_t i = 0; i < total; ++i) fn(user, i);
  }
};

// 64-byte aligned float storage that is never zero-initialised implicitly.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t floats) { resize(floats); }
  void resize(size_t floats);
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> data_;
  size_t size_ = 0;
};

// Per-thread scratch arenas, reused across calls so repeated runs do not page-fault fresh memory.
// Slot 0 holds an op's main buffers and slot 2 its secondary ones (on the calling thread); slot 1 is
// for work inside parallel tasks (which may run on the calling thread too, hence separate slots).
float* thread_scratch(int slot, size_t floats);

// What follows the convolution proper, applied in the output stage.
enum Activation : int { kActNone = 0, kActRelu = 1, kActClip = 2 };

struct Epilogue {
  const float* bias = nullptr;      // [K] or null
  const float* residual = nullptr;  // same shape as the output, or null
  int activation = kActNone;
  float lo = 0.f, hi = 0.f;         // Clip bounds
};

// ---- Winograd F(m x m, 3 x 3) ------------------------------------------------------------------

struct WinogradShape {
  int64_t n, c, h, w, k;  // batch, input channels, input height/width, output channels
  int64_t pad_top, pad_left, pad_bottom, pad_right;
  int m;  // output tile size: 2, 4 or 6

  int64_t out_h() const { return h + pad_top + pad_bottom - 2; }
  int64_t out_w() const { return w + pad_left + pad_right - 2; }
};

// ---- FFT ------------------------------------------------------------------------------------------

// A complex FFT of length n as a sequence of Stockham stages (radix 4, 2, 3, 5, then any prime).
struct FftPlan {
  struct Stage {
    int radix;
    int64_t length;  // sub-transform length at this stage
    int64_t stride;  // product of the radices before it
    size_t twiddle_offset;  // into twiddles: (length / radix) x (radix - 1) pairs of (cos, sin)
    size_t dft_offset;      // generic radix only: radix x radix pairs of (cos, sin) into dft
  };
  int64_t n = 1;
  std::vector<Stage> stages;
  std::vector<float> twiddles;
  std::vector<float> dft;  // odd radices: (cos, -sin) of 2 pi t / radix for t in [0, radix)

  static FftPlan make(int64_t n);  // forward (e^{-2 pi i jk / n}); inverse = forward on swapped (re, im)
};

// Smallest n' >= n whose prime factors are 2, 3 and 5 only.
int64_t next_smooth(int64_t n);

struct FftConvSpec {
  int dims;                  // 1 or 2 (1-D convs use h = kh = 1)
  int64_t n, c, h, w, k;     // batch, in channels, input height/width, out channels
  int64_t kh, kw;            // kernel size
  int64_t pad_top, pad_left, pad_bottom, pad_right;
  bool depthwise;            // group == c == k; otherwise group 1
  int64_t out_h() const { return h + pad_top + pad_bottom - kh + 1; }
  int64_t out_w() const { return w + pad_left + pad_right - kw + 1; }
};

// Everything an FFT convolution of one input shape needs, built once and cached per shape.
struct FftConvPlan {
  FftConvSpec spec;
  int64_t lh = 1, lw = 1;          // FFT tile size
  int64_t vh = 1, vw = 1;          // valid outputs per tile
  int64_t tiles_h = 1, tiles_w = 1;
  int64_t rows = 0;                // n * tiles
  int64_t in_signals = 0, in_half = 0, in_lanes_half = 0;    // signals, signals per half, lanes per half
  int64_t out_signals = 0, out_half = 0, out_lanes_half = 0;
  int64_t half_w = 1;              // lw / 2 + 1: bins kept along w
  FftPlan plan_h, plan_w;
  // Kernel spectra (already scaled by 1 / (lh * lw)):
  //   dense:     [lh][half_w][c][k_pad] re then im planes
  //   depthwise: per lane pair P and Q over [lh][half_w][in_lanes_half], re/im planes
  AlignedBuffer spectra;
  int64_t k_pad = 0;
};

// ---- Dispatch table -------------------------------------------------------------------------------

struct KernelTable {
  const char* name;
  int vl;  // floats per vector
  int mr, nr;  // GEMM register tile

  // Winograd: weights [K][C][3][3] -> packed transformed weights; size from winograd_packed_floats.
  size_t (*winograd_packed_floats)(const WinogradShape& shape);
  void (*winograd_pack)(const WinogradShape& shape, const float* weights, float* packed);
  void (*winograd_run)(const WinogradShape& shape, const float* x, const float* packed, const Epilogue& epi,
                       float* y, const Parallel& par);

  // FFT convolution: prepare the spectra of plan (plan fields other than spectra filled in by the caller).
  void (*fft_conv_prepare)(FftConvPlan& plan, const float* weights, const Parallel& par);
  void (*fft_conv_run)(const FftConvPlan& plan, const float* x, const Epilogue& epi, float* y,
                       const Parallel& par);
  // A batched complex FFT (exposed for tests): `lanes` independent signals stored [n][lanes].
  void (*fft_batch)(const FftPlan& plan, int64_t lanes, const float* in_re, const float* in_im, float* out_re,
                    float* out_im);

  // GEMM with a packed right-hand side: C[m x n] = A[m x k] (row-major, lda) * B (+= when accumulate).
  size_t (*gemm_packed_floats)(int64_t k, int64_t n);
  void (*gemm_pack)(int64_t k, int64_t n, const float* b, int64_t ldb, float* packed);
  void (*gemm_run)(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* packed, float* c,
                   int64_t ldc, bool accumulate, const Parallel& par);
};

// The table to use now: ONNXOPT_KERNELS_ISA (avx512, avx2, generic, scalar) if set and supported,
// else the best the CPU supports.
const KernelTable& select_table();
// A table by name, or null if unknown or unsupported here.
const KernelTable* table_by_name(const char* name);
// Names of the tables this CPU can run, best first (comma separated).
const char* supported_isas();

// Per-op, per-ISA call counters (tests prove a session used the kernels).
void count_call(const char* op, const char* isa);

}  // namespace onnxopt
