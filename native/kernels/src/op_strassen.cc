// StrassenMatMul: Y = A B with a constant B, by Strassen's seven-product recursion (one or two levels)
// over this library's packed GEMM.
//
// The right-hand side combinations of every level (B11 + B22, B12 - B22, ...) are formed and packed once
// at kernel creation, 7/4 (one level) or 49/16 (two levels) of B's size; each call forms only the
// left-hand side sums. Dimensions are zero-padded up to multiples of 2^levels. `levels = 0` runs the
// plain packed GEMM (the baseline that separates "our GEMM" from "Strassen" when measuring).
#include <algorithm>
#include <array>
#include <string>

#include "ops.h"

namespace onnxopt {
namespace {

struct StrassenNode {
  int level = 0;
  int64_t k = 0, n = 0;
  AlignedBuffer packed;  // level 0
  std::array<std::unique_ptr<StrassenNode>, 7> kids;
};

// dst = a + sign * b over an m x n block (b may be null: copy).
void combine(int64_t m, int64_t n, const float* a, int64_t lda, const float* b, int64_t ldb, float sign, float* dst,
             int64_t ldd) {
  for (int64_t r = 0; r < m; ++r) {
    const float* ar = a + r * lda;
    float* dr = dst + r * ldd;
    if (b == nullptr) {
      std::copy_n(ar, n, dr);
      continue;
    }
    const float* br = b + r * ldb;
    for (int64_t c = 0; c < n; ++c) dr[c] = ar[c] + sign * br[c];
  }
}

std::unique_ptr<StrassenNode> build(const KernelTable& table, int level, const float* b, int64_t ldb, int64_t k,
                                    int64_t n) {
  auto node = std::make_unique<StrassenNode>();
  node->level = level;
  node->k = k;
  node->n = n;
  if (level == 0) {
    node->packed.resize(table.gemm_packed_floats(k, n));
    table.gemm_pack(k, n, b, ldb, node->packed.data());
    return node;
  }
  const int64_t k2 = k / 2, n2 = n / 2;
  const float* b11 = b;
  const float* b12 = b + n2;
  const float* b21 = b + k2 * ldb;
  const float* b22 = b21 + n2;
  // T_i of the seven products: (B11+B22), B11, (B12-B22), (B21-B11), B22, (B11+B12), (B21+B22).
  const std::array<std::tuple<const float*, const float*, float>, 7> terms = {{
      {b11, b22, 1.f}, {b11, nullptr, 0.f}, {b12, b22, -1.f}, {b21, b11, -1.f},
      {b22, nullptr, 0.f}, {b11, b12, 1.f}, {b21, b22, 1.f}}};
  std::vector<float> t(static_cast<size_t>(k2 * n2));
  for (size_t i = 0; i < 7; ++i) {
    const auto& [first, second, sign] = terms[i];
    combine(k2, n2, first, ldb, second, ldb, sign, t.data(), n2);
    node->kids[i] = build(table, level - 1, t.data(), n2, k2, n2);
  }
  return node;
}

void run_node(const KernelTable& table, const StrassenNode& node, int64_t m, const float* a, int64_t lda, float* c,
              int64_t ldc, const Parallel& par) {
  if (node.level == 0) {
    table.gemm_run(m, node.n, node.k, a, lda, node.packed.data(), c, ldc, false, par);
    return;
  }
  const int64_t m2 = m / 2, k2 = node.k / 2, n2 = node.n / 2;
  const float* a11 = a;
  const float* a12 = a + k2;
  const float* a21 = a + m2 * lda;
  const float* a22 = a21 + k2;
  AlignedBuffer sums(static_cast<size_t>(5 * m2 * k2));
  AlignedBuffer products(static_cast<size_t>(7 * m2 * n2));
  float* s = sums.data();
  auto sum_at = [&](int i) { return s + i * m2 * k2; };
  // S_i: (A11+A22), (A21+A22), A11, A22, (A11+A12), (A21-A11), (A12-A22); A11 and A22 are used in place.
  auto form_sums = [&](size_t r) {
    const int64_t row = static_cast<int64_t>(r);
    combine(1, k2, a11 + row * lda, lda, a22 + row * lda, lda, 1.f, sum_at(0) + row * k2, k2);
    combine(1, k2, a21 + row * lda, lda, a22 + row * lda, lda, 1.f, sum_at(1) + row * k2, k2);
    combine(1, k2, a11 + row * lda, lda, a12 + row * lda, lda, 1.f, sum_at(2) + row * k2, k2);
    combine(1, k2, a21 + row * lda, lda, a11 + row * lda, lda, -1.f, sum_at(3) + row * k2, k2);
    combine(1, k2, a12 + row * lda, lda, a22 + row * lda, lda, -1.f, sum_at(4) + row * k2, k2);
  };
  par.for_each(static_cast<size_t>(m2), form_sums);
  const std::array<std::pair<const float*, int64_t>, 7> lhs = {{{sum_at(0), k2}, {sum_at(1), k2}, {a11, lda},
                                                                {a22, lda}, {sum_at(2), k2}, {sum_at(3), k2},
                                                                {sum_at(4), k2}}};
  auto product = [&](int i) { return products.data() + i * m2 * n2; };
  for (int i = 0; i < 7; ++i) run_node(table, *node.kids[i], m2, lhs[i].first, lhs[i].second, product(i), n2, par);
  float* c11 = c;
  float* c12 = c + n2;
  float* c21 = c + m2 * ldc;
  float* c22 = c21 + n2;
  // C11 = M1 + M4 - M5 + M7, C12 = M3 + M5, C21 = M2 + M4, C22 = M1 - M2 + M3 + M6.
  auto rows = [&](size_t r) {
    const int64_t row = static_cast<int64_t>(r);
    const float* p1 = product(0) + row * n2;
    const float* p2 = product(1) + row * n2;
    const float* p3 = product(2) + row * n2;
    const float* p4 = product(3) + row * n2;
    const float* p5 = product(4) + row * n2;
    const float* p6 = product(5) + row * n2;
    const float* p7 = product(6) + row * n2;
    for (int64_t j = 0; j < n2; ++j) {
      c11[row * ldc + j] = p1[j] + p4[j] - p5[j] + p7[j];
      c12[row * ldc + j] = p3[j] + p5[j];
      c21[row * ldc + j] = p2[j] + p4[j];
      c22[row * ldc + j] = p1[j] - p2[j] + p3[j] + p6[j];
    }
  };
  par.for_each(static_cast<size_t>(m2), rows);
}

class StrassenKernel final : public KernelBase {
 public:
  StrassenKernel(const OpDescriptor& op, const OrtApi* api, const OrtKernelInfo* info)
      : KernelBase(api), op_(op), table_(&select_table()) {
    levels_ = static_cast<int>(api_.attr_int(info, "levels", 1));
    if (levels_ < 0 || levels_ > 3) throw KernelError("StrassenMatMul: levels must be 0 to 3");
    if (const OrtValue* b = api_.constant_input(info, 1)) {
      root_ = prepare(api_.shape(b), api_.data(b));
      constant_ = true;
    }
  }

  void compute(OrtKernelContext* context) override {
    const OrtValue* a = api_.input(context, 0);
    const OrtValue* b = api_.input(context, 1);
    if (a == nullptr || b == nullptr) throw KernelError("StrassenMatMul: inputs A and B are required");
    if (api_.element_type(a) != kElementFloat || api_.element_type(b) != kElementFloat)
      throw KernelError("StrassenMatMul: A and B must be float32");
    const std::vector<int64_t> a_shape = api_.shape(a), b_shape = api_.shape(b);
    if (b_shape.size() != 2 || a_shape.empty() || a_shape.back() != b_shape[0])
      throw KernelError("StrassenMatMul: A [..., M, K] times B [K, N] expected");
    // B computed at run time: its combinations are formed on every call (slow, but correct).
    std::unique_ptr<StrassenNode> per_call;
    if (!constant_) per_call = prepare(b_shape, api_.data(b));
    const StrassenNode& root = constant_ ? *root_ : *per_call;
    if (b_shape[0] != k_ || b_shape[1] != n_) throw KernelError("StrassenMatMul: B changed shape");
    int64_t m = 1;
    for (size_t i = 0; i + 1 < a_shape.size(); ++i) m *= a_shape[i];
    std::vector<int64_t> out_shape(a_shape.begin(), a_shape.end() - 1);
    out_shape.push_back(n_);
    float* y = api_.output(context, 0, out_shape);
    OrtParallel par(api_, context, 2.0 * double(m) * double(k_) * double(n_));
    const int64_t unit = int64_t{1} << levels_;
    const int64_t mp = (m + unit - 1) / unit * unit;
    const float* lhs = api_.data(a);
    int64_t lda = k_;
    AlignedBuffer padded_a, padded_c;
    if (mp != m || kp_ != k_) {
      padded_a.resize(static_cast<size_t>(mp * kp_));
      std::fill(padded_a.data(), padded_a.data() + mp * kp_, 0.f);
      for (int64_t r = 0; r < m; ++r) std::copy_n(lhs + r * k_, k_, padded_a.data() + r * kp_);
      lhs = padded_a.data();
      lda = kp_;
    }
    if (mp == m && np_ == n_) {
      run_node(*table_, root, mp, lhs, lda, y, n_, par);
    } else {
      padded_c.resize(static_cast<size_t>(mp * np_));
      run_node(*table_, root, mp, lhs, lda, padded_c.data(), np_, par);
      for (int64_t r = 0; r < m; ++r) std::copy_n(padded_c.data() + r * np_, n_, y + r * n_);
    }
    count_call(op_.name, table_->name);
  }

 private:
  std::unique_ptr<StrassenNode> prepare(const std::vector<int64_t>& shape, const float* b) {
    if (shape.size() != 2) throw KernelError("StrassenMatMul: B must be 2-D");
    k_ = shape[0];
    n_ = shape[1];
    const int64_t unit = int64_t{1} << levels_;
    kp_ = (k_ + unit - 1) / unit * unit;
    np_ = (n_ + unit - 1) / unit * unit;
    std::vector<float> padded(static_cast<size_t>(kp_ * np_), 0.f);
    for (int64_t r = 0; r < k_; ++r) std::copy_n(b + r * n_, n_, padded.data() + r * np_);
    return build(*table_, levels_, padded.data(), np_, kp_, np_);
  }

  const OpDescriptor& op_;
  const KernelTable* table_;
  int levels_ = 1;
  bool constant_ = false;
  int64_t k_ = 0, n_ = 0, kp_ = 0, np_ = 0;
  std::unique_ptr<StrassenNode> root_;
};

}  // namespace

std::unique_ptr<KernelBase> make_strassen_kernel(const OpDescriptor& op, const OrtApi* api,
                                                 const OrtKernelInfo* info) {
  return std::make_unique<StrassenKernel>(op, api, info);
}

}  // namespace onnxopt
