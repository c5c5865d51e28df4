// Run-time choice of the instruction-set level, shared buffers and FFT plans, call counters, and the
// small C interface the Python side reads with ctypes (counters, ISA names, an FFT for tests).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "kernels.h"

#ifdef _WIN32
#include <malloc.h>
#endif

namespace onnxopt {

#ifdef ONNXOPT_HAVE_AVX512
const KernelTable* table_avx512();
#endif
#ifdef ONNXOPT_HAVE_AVX2
const KernelTable* table_avx2();
#endif
const KernelTable* table_generic();
const KernelTable* table_scalar();

// ---- buffers --------------------------------------------------------------------------------------

#ifdef _WIN32
void AlignedBuffer::Free::operator()(float* p) const { _aligned_free(p); }
#else
void AlignedBuffer::Free::operator()(float* p) const { std::free(p); }
#endif

void AlignedBuffer::resize(size_t floats) {
  const size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
#ifdef _WIN32
  void* memory = _aligned_malloc(bytes == 0 ? 64 : bytes, 64);
#else
  void* memory = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
#endif
  if (memory == nullptr) throw std::bad_alloc();
  data_.reset(static_cast<float*>(memory));
  size_ = floats;
}

float* thread_scratch(int slot, size_t floats) {
  thread_local AlignedBuffer arenas[3];
  AlignedBuffer& arena = arenas[slot];
  if (arena.size() < floats) arena.resize(floats + floats / 4);
  return arena.data();
}

// ---- FFT plans ------------------------------------------------------------------------------------

int64_t next_smooth(int64_t n) {
  for (int64_t m = n < 1 ? 1 : n;; ++m) {
    int64_t r = m;
    for (int64_t p : {2, 3, 5})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

FftPlan FftPlan::make(int64_t n) {
  FftPlan plan;
  plan.n = n;
  std::vector<int> radices;
  int64_t rest = n;
  while (rest % 4 == 0) {
    radices.push_back(4);
    rest /= 4;
  }
  for (int p : {2, 3, 5})
    while (rest % p == 0) {
      radices.push_back(p);
      rest /= p;
    }
  for (int64_t p = 7; rest > 1; p += 2)
    while (rest % p == 0) {
      radices.push_back(static_cast<int>(p));
      rest /= p;
    }
  const double two_pi = 2.0 * M_PI;
  int64_t length = n, stride = 1;
  for (int radix : radices) {
    Stage st{radix, length, stride, plan.twiddles.size(), plan.dft.size()};
    const int64_t m = length / radix;
    for (int64_t q = 0; q < m; ++q)
      for (int r = 1; r < radix; ++r) {
        const double angle = two_pi * static_cast<double>(r * q) / static_cast<double>(length);
        plan.twiddles.push_back(static_cast<float>(std::cos(angle)));
        plan.twiddles.push_back(static_cast<float>(-std::sin(angle)));
      }
    if (radix % 2 == 1)
      for (int t = 0; t < radix; ++t) {
        const double angle = two_pi * t / radix;
        plan.dft.push_back(static_cast<float>(std::cos(angle)));
        plan.dft.push_back(static_cast<float>(-std::sin(angle)));
      }
    plan.stages.push_back(st);
    stride *= radix;
    length /= radix;
  }
  return plan;
}

// ---- ISA selection --------------------------------------------------------------------------------

namespace {

bool cpu_has(const char* level) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::strcmp(level, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::strcmp(level, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  if (std::strcmp(level, "avx512") == 0 || std::strcmp(level, "avx2") == 0) return false;
#endif
  return true;  // generic and scalar run anywhere
}

// Best first.
const KernelTable* const* all_tables(size_t* count) {
  static const KernelTable* tables[] = {
#ifdef ONNXOPT_HAVE_AVX512
      table_avx512(),
#endif
#ifdef ONNXOPT_HAVE_AVX2
      table_avx2(),
#endif
      table_generic(),
      table_scalar(),
  };
  *count = sizeof(tables) / sizeof(tables[0]);
  return tables;
}

}  // namespace

const KernelTable* table_by_name(const char* name) {
  size_t count = 0;
  const KernelTable* const* tables = all_tables(&count);
  for (size_t i = 0; i < count; ++i)
    if (std::strcmp(tables[i]->name, name) == 0) return cpu_has(name) ? tables[i] : nullptr;
  return nullptr;
}

const KernelTable& select_table() {
  size_t count = 0;
  const KernelTable* const* tables = all_tables(&count);
  // ONNXOPT_KERNELS_ISA caps the level: the named one if this CPU runs it, else the best below it.
  const char* wanted = std::getenv("ONNXOPT_KERNELS_ISA");
  size_t start = 0;
  if (wanted != nullptr && *wanted != '\0') {
    static const char* order[] = {"avx512", "avx2", "generic", "scalar"};
    size_t rank = 0;
    while (rank < 4 && std::strcmp(order[rank], wanted) != 0) ++rank;
    if (rank < 4)
      while (start < count) {
        size_t table_rank = 0;
        while (table_rank < 4 && std::strcmp(order[table_rank], tables[start]->name) != 0) ++table_rank;
        if (table_rank >= rank) break;
        ++start;
      }
  }
  for (size_t i = start; i < count; ++i)
    if (cpu_has(tables[i]->name)) return *tables[i];
  return *tables[count - 1];
}

const char* supported_isas() {
  static std::string names;
  static std::once_flag once;
  std::call_once(once, [] {
    size_t count = 0;
    const KernelTable* const* tables = all_tables(&count);
    for (size_t i = 0; i < count; ++i)
      if (cpu_has(tables[i]->name)) names += (names.empty() ? "" : ",") + std::string(tables[i]->name);
  });
  return names.c_str();
}

// ---- counters -------------------------------------------------------------------------------------

namespace {
std::mutex counter_mutex;
std::map<std::string, int64_t>& counters() {
  static std::map<std::string, int64_t> table;
  return table;
}
}  // namespace

void count_call(const char* op, const char* isa) {
  std::lock_guard<std::mutex> lock(counter_mutex);
  ++counters()[std::string(op) + ":" + isa];
}

}  // namespace onnxopt

// ---- C interface for Python (ctypes) ---------------------------------------------------------------

extern "C" {

__attribute__((visibility("default"))) int64_t onnxopt_kernels_calls(const char* op, const char* isa) {
  std::lock_guard<std::mutex> lock(onnxopt::counter_mutex);
  int64_t total = 0;
  for (const auto& [key, value] : onnxopt::counters()) {
    const size_t colon = key.find(':');
    const bool op_ok = op == nullptr || *op == '\0' || key.compare(0, colon, op) == 0;
    const bool isa_ok = isa == nullptr || *isa == '\0' || key.compare(colon + 1, std::string::npos, isa) == 0;
    if (op_ok && isa_ok) total += value;
  }
  return total;
}

__attribute__((visibility("default"))) void onnxopt_kernels_reset_calls() {
  std::lock_guard<std::mutex> lock(onnxopt::counter_mutex);
  onnxopt::counters().clear();
}

// The level kernels created now would use (honours ONNXOPT_KERNELS_ISA).
__attribute__((visibility("default"))) const char* onnxopt_kernels_isa() { return onnxopt::select_table().name; }

__attribute__((visibility("default"))) const char* onnxopt_kernels_supported_isas() {
  return onnxopt::supported_isas();
}

// A forward complex FFT of `lanes` signals of length n stored [n][lanes], with the named level's kernels;
// returns 0, or -1 for an unknown/unsupported level. For tests of arbitrary lengths.
__attribute__((visibility("default"))) int onnxopt_kernels_fft(const char* isa, int64_t n, int64_t lanes,
                                                               const float* in_re, const float* in_im,
                                                               float* out_re, float* out_im) {
  const onnxopt::KernelTable* table = onnxopt::table_by_name(isa);
  if (table == nullptr || n < 1 || lanes < 1) return -1;
  const onnxopt::FftPlan plan = onnxopt::FftPlan::make(n);
  table->fft_batch(plan, lanes, in_re, in_im, out_re, out_im);
  return 0;
}

}  // extern "C"
