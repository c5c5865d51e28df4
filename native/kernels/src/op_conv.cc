// WinogradConv* and FFTConv* kernels: attributes, weights prepared once, shape checks, the epilogue.
//
// Weights are transformed when onnxruntime creates the kernel (Winograd: G g G^T, packed for the GEMM)
// if they are constant initializers, as the fast-conv pass emits them; a non-constant weight input still
// works, transformed on every call. FFT spectra depend on the FFT size, hence on the input's spatial
// size: they are computed at the first call with a given input shape and cached for the next ones.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

#include "ops.h"

namespace onnxopt {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

// Everything both conv ops share: inputs, bias, residual and activation.
class ConvKernel : public KernelBase {
 public:
  ConvKernel(const OpDescriptor& op, const OrtApi* api, const OrtKernelInfo* info)
      : KernelBase(api), op_(op), table_(&select_table()) {
    pads_ = api_.attr_ints(info, "pads");
    for (int64_t p : pads_)
      if (p < 0) throw KernelError(std::string(op.name) + ": negative pads are not supported");
    lo_ = api_.attr_float(info, "clip_min", -INFINITY);
    hi_ = api_.attr_float(info, "clip_max", INFINITY);
    const size_t inputs = api_.info_input_count(info);
    if (inputs > 1) weights_value_ = api_.constant_input(info, 1);
    if (inputs > 2) {
      // An omitted optional input reports as non-constant; a present constant bias is copied once.
      if (const OrtValue* bias = api_.constant_input(info, 2)) {
        const std::vector<int64_t> shape = api_.shape(bias);
        const float* data = api_.data(bias);
        const int64_t count = shape.empty() ? 1 : shape[0];
        bias_.assign(data, data + count);
        has_constant_bias_ = true;
      }
    }
  }

 protected:
  struct Inputs {
    const float* x;
    std::vector<int64_t> x_shape;
    const float* w;
    std::vector<int64_t> w_shape;
    const float* bias;
    const OrtValue* residual;
  };

  Inputs read_inputs(OrtKernelContext* context) const {
    Inputs in{};
    const OrtValue* x = api_.input(context, 0);
    const OrtValue* w = api_.input(context, 1);
    if (x == nullptr || w == nullptr) throw KernelError(std::string(op_.name) + ": inputs X and W are required");
    if (api_.element_type(x) != kElementFloat || api_.element_type(w) != kElementFloat)
      throw KernelError(std::string(op_.name) + ": X and W must be float32");
    in.x = api_.data(x);
    in.x_shape = api_.shape(x);
    in.w = api_.data(w);
    in.w_shape = api_.shape(w);
    const OrtValue* bias = api_.input(context, 2);
    in.bias = has_constant_bias_ ? bias_.data() : (bias ? api_.data(bias) : nullptr);
    if (bias != nullptr && !has_constant_bias_) {
      const std::vector<int64_t> shape = api_.shape(bias);
      if (shape.size() != 1 || shape[0] != in.w_shape[0])
        throw KernelError(std::string(op_.name) + ": bias must have one value per output channel");
    }
    in.residual = op_.residual ? api_.input(context, 3) : nullptr;
    if (op_.residual && in.residual == nullptr)
      throw KernelError(std::string(op_.name) + ": the residual input is required");
    return in;
  }

  Epilogue epilogue(const Inputs& in, const std::vector<int64_t>& out_shape) const {
    Epilogue epi;
    epi.bias = in.bias;
    epi.activation = op_.activation;
    epi.lo = lo_;
    epi.hi = hi_;
    if (in.residual != nullptr) {
      if (api_.shape(in.residual) != out_shape)
        throw KernelError(std::string(op_.name) + ": residual shape " + shape_text(api_.shape(in.residual)) +
                          " differs from the output shape " + shape_text(out_shape));
      epi.residual = api_.data(in.residual);
    }
    return epi;
  }

  int64_t pad(size_t index) const { return index < pads_.size() ? pads_[index] : 0; }

  const OpDescriptor& op_;
  const KernelTable* table_;
  std::vector<int64_t> pads_;
  float lo_, hi_;
  const OrtValue* weights_value_ = nullptr;
  std::vector<float> bias_;
  bool has_constant_bias_ = false;
};

// ---- Winograd --------------------------------------------------------------------------------------

class WinogradKernel final : public ConvKernel {
 public:
  WinogradKernel(const OpDescriptor& op, const OrtApi* api, const OrtKernelInfo* info) : ConvKernel(op, api, info) {
    tile_ = static_cast<int>(api_.attr_int(info, "tile", 4));
    if (tile_ != 2 && tile_ != 4 && tile_ != 6) throw KernelError("WinogradConv: tile must be 2, 4 or 6");
    if (pads_.size() != 4 && !pads_.empty()) throw KernelError("WinogradConv: pads must have 4 values");
    if (weights_value_ != nullptr) {
      const std::vector<int64_t> w_shape = api_.shape(weights_value_);
      check_weights(w_shape);
      packed_shape_ = shape_for(w_shape, 1, w_shape[1], 1, 1);
      packed_.resize(table_->winograd_packed_floats(packed_shape_));
      table_->winograd_pack(packed_shape_, api_.data(weights_value_), packed_.data());
    }
  }

  void compute(OrtKernelContext* context) override {
    const Inputs in = read_inputs(context);
    if (in.x_shape.size() != 4) throw KernelError("WinogradConv: X must be NCHW, got " + shape_text(in.x_shape));
    check_weights(in.w_shape);
    if (in.x_shape[1] != in.w_shape[1])
      throw KernelError("WinogradConv: X has " + std::to_string(in.x_shape[1]) + " channels, W expects " +
                        std::to_string(in.w_shape[1]));
    const WinogradShape shape = shape_for(in.w_shape, in.x_shape[0], in.x_shape[1], in.x_shape[2], in.x_shape[3]);
    if (shape.out_h() < 1 || shape.out_w() < 1) throw KernelError("WinogradConv: empty output");
    const std::vector<int64_t> out_shape = {shape.n, shape.k, shape.out_h(), shape.out_w()};
    const Epilogue epi = epilogue(in, out_shape);
    float* y = api_.output(context, 0, out_shape);
    const float* packed = packed_.data();
    AlignedBuffer per_call;
    if (weights_value_ == nullptr) {  // weights computed at run time: transform them now
      per_call.resize(table_->winograd_packed_floats(shape));
      table_->winograd_pack(shape, in.w, per_call.data());
      packed = per_call.data();
    }
    const double alpha = tile_ + 2;
    const double tiles =
        double(shape.n) * std::ceil(double(shape.out_h()) / tile_) * std::ceil(double(shape.out_w()) / tile_);
    OrtParallel par(api_, context, 2.0 * alpha * alpha * tiles * double(shape.c) * double(shape.k));
    table_->winograd_run(shape, in.x, packed, epi, y, par);
    count_call(op_.name, table_->name);
  }

 private:
  static void check_weights(const std::vector<int64_t>& w) {
    if (w.size() != 4 || w[2] != 3 || w[3] != 3)
      throw KernelError("WinogradConv: W must be [K, C, 3, 3], got " + shape_text(w));
  }

  WinogradShape shape_for(const std::vector<int64_t>& w, int64_t n, int64_t c, int64_t h, int64_t wd) const {
    WinogradShape s{};
    s.n = n;
    s.c = c;
    s.h = h;
    s.w = wd;
    s.k = w[0];
    s.pad_top = pad(0);
    s.pad_left = pad(1);
    s.pad_bottom = pad(2);
    s.pad_right = pad(3);
    s.m = tile_;
    return s;
  }

  int tile_ = 4;
  WinogradShape packed_shape_{};
  AlignedBuffer packed_;
};

// ---- FFT ---------------------------------------------------------------------------------------------

// Smooth sizes in [low, high].
std::vector<int64_t> smooth_sizes(int64_t low, int64_t high) {
  std::vector<int64_t> sizes;
  for (int64_t n = next_smooth(low); n <= high; n = next_smooth(n + 1)) sizes.push_back(n);
  if (sizes.empty()) sizes.push_back(next_smooth(low));
  return sizes;
}

// Estimated floating-point work of one FFT-size choice (FFTs on pairs of real signals, then the product).
double fft_cost(const FftConvSpec& s, int64_t lh, int64_t lw) {
  const double tiles = static_cast<double>(s.n) * std::ceil(double(s.out_h()) / double(lh - s.kh + 1)) *
                       std::ceil(double(s.out_w()) / double(lw - s.kw + 1));
  const double points = double(lh) * double(lw);
  const double fft = 5.0 * points * std::log2(std::max(points, 2.0)) * 0.5 * double(s.c + s.k);
  const double product = s.depthwise ? 16.0 * points * 0.5 * double(s.c)
                                     : 8.0 * double(lh) * double(lw / 2 + 1) * double(s.c) * double(s.k) +
                                           12.0 * points * 0.5 * double(s.c + s.k);
  return tiles * (fft + product);
}

constexpr double kMaxSpectrumFloats = 16.0 * 1024 * 1024;  // 64 MiB of kernel spectra per plan at most
constexpr size_t kMaxCachedPlans = 8;                        // input shapes whose spectra are kept per kernel

class FftKernel final : public ConvKernel {
 public:
  FftKernel(const OpDescriptor& op, const OrtApi* api, const OrtKernelInfo* info) : ConvKernel(op, api, info) {
    group_ = api_.attr_int(info, "group", 1);
  }

  void compute(OrtKernelContext* context) override {
    const Inputs in = read_inputs(context);
    const FftConvSpec spec = spec_for(in);
    const std::vector<int64_t> out_shape = spec.dims == 1
                                               ? std::vector<int64_t>{spec.n, spec.k, spec.out_w()}
                                               : std::vector<int64_t>{spec.n, spec.k, spec.out_h(), spec.out_w()};
    const Epilogue epi = epilogue(in, out_shape);
    float* y = api_.output(context, 0, out_shape);
    OrtParallel prepare_par(api_, context, OrtParallel::kSerialFlops);  // one-off work: always the pool
    std::shared_ptr<const FftConvPlan> plan = plan_for(spec, in.w, prepare_par);
    OrtParallel par(api_, context, fft_cost(spec, plan->lh, plan->lw));
    table_->fft_conv_run(*plan, in.x, epi, y, par);
    count_call(op_.name, table_->name);
  }

 private:
  FftConvSpec spec_for(const Inputs& in) const {
    const size_t rank = in.x_shape.size();
    if (rank != 3 && rank != 4) throw KernelError("FFTConv: X must be NCW or NCHW, got " + shape_text(in.x_shape));
    if (in.w_shape.size() != rank) throw KernelError("FFTConv: W rank differs from X rank");
    FftConvSpec s{};
    s.dims = static_cast<int>(rank) - 2;
    s.n = in.x_shape[0];
    s.c = in.x_shape[1];
    s.k = in.w_shape[0];
    s.h = s.dims == 1 ? 1 : in.x_shape[2];
    s.w = in.x_shape[rank - 1];
    s.kh = s.dims == 1 ? 1 : in.w_shape[2];
    s.kw = in.w_shape[rank - 1];
    if (!pads_.empty() && pads_.size() != static_cast<size_t>(2 * s.dims))
      throw KernelError("FFTConv: pads must have 2 values per spatial axis");
    if (s.dims == 1) {
      s.pad_left = pad(0);
      s.pad_right = pad(1);
    } else {
      s.pad_top = pad(0);
      s.pad_left = pad(1);
      s.pad_bottom = pad(2);
      s.pad_right = pad(3);
    }
    s.depthwise = group_ > 1;
    if (s.depthwise && !(group_ == s.c && s.k == s.c && in.w_shape[1] == 1))
      throw KernelError("FFTConv: group must be 1 or equal to the channels (depthwise, one filter each)");
    if (!s.depthwise && in.w_shape[1] != s.c)
      throw KernelError("FFTConv: X has " + std::to_string(s.c) + " channels, W expects " +
                        std::to_string(in.w_shape[1]));
    if (s.out_h() < 1 || s.out_w() < 1) throw KernelError("FFTConv: empty output");
    return s;
  }

  std::shared_ptr<const FftConvPlan> plan_for(const FftConvSpec& spec, const float* weights, const Parallel& par) {
    const std::array<int64_t, 3> key = {spec.n, spec.h, spec.w};
    std::lock_guard<std::mutex> lock(mutex_);
    if (weights_value_ != nullptr) {
      auto found = plans_.find(key);
      if (found != plans_.end()) return found->second;
    }
    auto plan = std::make_shared<FftConvPlan>(build_plan(spec));
    table_->fft_conv_prepare(*plan, weights, par);
    if (weights_value_ != nullptr) {  // run-time weights: never cached
      if (plans_.size() >= kMaxCachedPlans) plans_.erase(plans_.begin());  // many input shapes: keep it bounded
      plans_[key] = plan;
    }
    return plan;
  }

  FftConvPlan build_plan(const FftConvSpec& s) const {
    const int64_t vl = table_->vl;
    std::vector<int64_t> hs = s.dims == 1 ? std::vector<int64_t>{1}
                                          : smooth_sizes(s.kh, next_smooth(s.out_h() + s.kh - 1));
    std::vector<int64_t> ws = smooth_sizes(s.kw, std::min<int64_t>(next_smooth(s.out_w() + s.kw - 1), 1 << 16));
    int64_t best_h = hs.back(), best_w = ws.back();
    double best = -1;
    for (int64_t lh : hs)
      for (int64_t lw : ws) {
        if (lw - s.kw + 1 < 1 || lh - s.kh + 1 < 1) continue;
        const double spectrum = s.depthwise ? 2.0 * lh * (lw / 2 + 1) * s.c : 2.0 * lh * (lw / 2 + 1) * s.c * s.k;
        if (spectrum > kMaxSpectrumFloats && !(lh == hs.front() && lw == ws.front())) continue;
        const double cost = fft_cost(s, lh, lw);
        if (best < 0 || cost < best) {
          best = cost;
          best_h = lh;
          best_w = lw;
        }
      }
    FftConvPlan plan;
    plan.spec = s;
    plan.lh = best_h;
    plan.lw = best_w;
    plan.vh = best_h - s.kh + 1;
    plan.vw = best_w - s.kw + 1;
    plan.tiles_h = (s.out_h() + plan.vh - 1) / plan.vh;
    plan.tiles_w = (s.out_w() + plan.vw - 1) / plan.vw;
    plan.rows = s.n * plan.tiles_h * plan.tiles_w;
    plan.half_w = plan.lw / 2 + 1;
    plan.in_signals = plan.rows * s.c;
    plan.in_half = (plan.in_signals + 1) / 2;
    plan.in_lanes_half = (plan.in_half + vl - 1) / vl * vl;
    plan.out_signals = plan.rows * s.k;
    plan.out_half = (plan.out_signals + 1) / 2;
    plan.out_lanes_half = (plan.out_half + vl - 1) / vl * vl;
    plan.k_pad = (s.k + vl - 1) / vl * vl;
    plan.plan_h = FftPlan::make(plan.lh);
    plan.plan_w = FftPlan::make(plan.lw);
    return plan;
  }

  int64_t group_ = 1;
  std::mutex mutex_;
  std::map<std::array<int64_t, 3>, std::shared_ptr<const FftConvPlan>> plans_;
};

}  // namespace

std::unique_ptr<KernelBase> make_conv_kernel(const OpDescriptor& op, const OrtApi* api, const OrtKernelInfo* info) {
  if (op.kind == OpKind::kWinograd) return std::make_unique<WinogradKernel>(op, api, info);
  return std::make_unique<FftKernel>(op, api, info);
}

}  // namespace onnxopt
