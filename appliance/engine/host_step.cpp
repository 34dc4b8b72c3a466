// The host engine's decode step (one token through every layer and the output head) as one call:
// host_kernels.py compiles it for this machine and host_decoder.py calls it as
// torch.ops.llm_tpu.decode_step.
//
// A decode step of a small model is mostly overhead when it runs op by op from Python: SmolLM2-135M
// makes about 1,350 small torch calls a token (2 to 3 us each) around 4.8 ms of weight kernels. Here
// the weight products still run on torch's own kernels (int4 / int8 weight-only, or the fp32 GEMV),
// called from C++, and everything between them (RMSNorm, rotary, the KV cache write, attention over
// the cache, SiLU gating, residuals) is plain loops over the layer's few thousand floats.
//
// The arithmetic is host_decoder.Decoder.forward's for one token, in the same order: fp32 everywhere
// except what the quantized kernels take and give (bf16 in, bf16 out, as in host_quant), rotary as
// x * cos + roll(x, dim/2) * signed sin, grouped KV heads as in scaled_dot_product_attention's
// enable_gqa (query head h reads KV head h / (heads / kv_heads)). Reductions run in another order than
// torch's, so results agree to float rounding, not bit for bit.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kPerLinear = 4;  // weight, aux (int4: scales+zeros; int8: scales), ones (int8), bias
constexpr int kPerLayerLinears = 4;  // qkv, o, gate_up, down
constexpr int kPerLayerNorms = 4;  // input, post-attention, q (optional), k (optional)

// Sum of a[i] * b[i] with independent partial sums (so that the compiler vectorizes it).
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {0.f};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0.f;
  for (int j = 0; j < 16; ++j) s += acc[j];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// out = x / sqrt(mean(x^2) + eps) * w  (torch's rms_norm in fp32)
inline void rms_norm(const float* x, const float* w, float* out, int64_t n, double eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / n) + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * r) * w[i];
}

// x W^T + b for x fp32 [1, K], in the layer's weight format (host_quant's Linear classes).
at::Tensor linear(const at::Tensor& x, const at::Tensor* t, int64_t group) {
  const at::Tensor& w = t[0];
  const at::Tensor& bias = t[3];
  if (w.scalar_type() == at::kFloat)
    return at::linear(x, w, bias.numel() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  at::Tensor y;
  if (w.scalar_type() == at::kByte)  // int4, torch's packing: the kernel's own bf16 rounding
    y = at::_weight_int4pack_mm_for_cpu(x.to(at::kBFloat16), w, group, t[1]).to(at::kFloat);
  else  // int8 per row: bf16 product, then the fp32 scales
    y = at::_weight_int8pack_mm(x.to(at::kBFloat16), w, t[2]).to(at::kFloat).mul_(t[1]);
  if (bias.numel()) y.add_(bias);
  return y;
}

// One query (q, [dim]) over positions 0..n-1 of one KV head's cache (k, v: [positions, dim]).
void attend(const float* q, const float* k, const float* v, int64_t n, int64_t dim, double scale,
            float* scores, float* out) {
  float top = -INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    scores[t] = dot(q, k + t * dim, dim) * static_cast<float>(scale);
    top = std::max(top, scores[t]);
  }
  float total = 0.f;
  for (int64_t t = 0; t < n; ++t) {
    scores[t] = std::exp(scores[t] - top);
    total += scores[t];
  }
  std::fill(out, out + dim, 0.f);
  for (int64_t t = 0; t < n; ++t) {
    const float p = scores[t];
    const float* vt = v + t * dim;
    for (int64_t d = 0; d < dim; ++d) out[d] += p * vt[d];
  }
  const float inv = 1.f / total;
  for (int64_t d = 0; d < dim; ++d) out[d] *= inv;
}

// The logits [1, vocab] of one token (its embedding x_in) at position pos, whose keys and values go
// into the caches: every layer, the final norm and the output head.
at::Tensor decode_step(const at::Tensor& x_in, at::TensorList linears, at::TensorList norms,
                       const at::Tensor& final_norm, at::TensorList head, const at::Tensor& k_cache,
                       const at::Tensor& v_cache, const at::Tensor& cos, const at::Tensor& sin, int64_t pos,
                       int64_t heads, int64_t kv_heads, double eps, double scale, int64_t group) {
  const int64_t layers = k_cache.size(0), positions = k_cache.size(3), dim = k_cache.size(4);
  const int64_t hidden = x_in.size(-1);
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.numel() == hidden, "x must be fp32 [1, hidden]");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.scalar_type() == at::kFloat,
              "the KV cache must be contiguous fp32 [layers, 1, kv_heads, positions, dim]");
  TORCH_CHECK(k_cache.size(2) == kv_heads && heads % kv_heads == 0, "heads do not fit the KV cache");
  TORCH_CHECK(static_cast<int64_t>(linears.size()) == layers * kPerLayerLinears * kPerLinear &&
                  static_cast<int64_t>(norms.size()) == layers * kPerLayerNorms &&
                  static_cast<int64_t>(head.size()) == kPerLinear && final_norm.numel() == hidden,
              "one set of weights per layer of the KV cache, a final norm and a head");
  TORCH_CHECK(pos >= 0 && pos < positions, "position ", pos, " is outside the KV cache");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.size(1) == dim, "rotary tables");

  const int64_t rep = heads / kv_heads, n = pos + 1, half = dim / 2;
  const int64_t q_width = heads * dim, kv_width = kv_heads * dim;
  at::Tensor x = x_in.reshape({1, hidden}).clone();
  at::Tensor h = at::empty({1, hidden}, x.options());
  at::Tensor attn = at::empty({1, q_width}, x.options());
  std::vector<float> rotated(dim);
  std::vector<float> scores(heads * n);
  const float* cos_row = cos.data_ptr<float>() + pos * dim;
  const float* sin_row = sin.data_ptr<float>() + pos * dim;
  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  const int64_t layer_stride = kv_heads * positions * dim;

  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* lin = linears.data() + l * kPerLayerLinears * kPerLinear;
    const at::Tensor* nrm = norms.data() + l * kPerLayerNorms;
    float* xp = x.data_ptr<float>();
    rms_norm(xp, nrm[0].data_ptr<float>(), h.data_ptr<float>(), hidden, eps);
    at::Tensor qkv = linear(h, lin, group).contiguous();
    float* qkvp = qkv.data_ptr<float>();
    // q and k heads: optional per-head RMSNorm (qwen3), then rotary in place
    for (int64_t hd = 0; hd < heads + kv_heads; ++hd) {
      float* v = qkvp + hd * dim;
      const at::Tensor& head_norm = hd < heads ? nrm[2] : nrm[3];
      if (head_norm.numel()) rms_norm(v, head_norm.data_ptr<float>(), v, dim, eps);
      for (int64_t i = 0; i < dim; ++i)
        rotated[i] = v[i] * cos_row[i] + v[(i + half) % dim] * sin_row[i];
      std::copy(rotated.begin(), rotated.end(), v);
    }
    float* kl = kc + l * layer_stride;
    float* vl = vc + l * layer_stride;
    for (int64_t g = 0; g < kv_heads; ++g) {
      std::copy(qkvp + q_width + g * dim, qkvp + q_width + (g + 1) * dim, kl + (g * positions + pos) * dim);
      std::copy(qkvp + q_width + kv_width + g * dim, qkvp + q_width + kv_width + (g + 1) * dim,
                vl + (g * positions + pos) * dim);
    }
    float* ap = attn.data_ptr<float>();
    // the heads split over the threads (about 2 us to start them; one head is 2 us at 150 positions)
    at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t hd = begin; hd < end; ++hd) {
        const int64_t g = hd / rep;
        attend(qkvp + hd * dim, kl + g * positions * dim, vl + g * positions * dim, n, dim, scale,
               scores.data() + hd * n, ap + hd * dim);
      }
    });
    at::Tensor o = linear(attn, lin + kPerLinear, group);
    x.add_(o);
    rms_norm(x.data_ptr<float>(), nrm[1].data_ptr<float>(), h.data_ptr<float>(), hidden, eps);
    at::Tensor gate_up = linear(h, lin + 2 * kPerLinear, group).contiguous();
    const int64_t inter = gate_up.size(-1) / 2;
    at::Tensor act = at::empty({1, inter}, x.options());
    const float* gu = gate_up.data_ptr<float>();
    float* ac = act.data_ptr<float>();
    for (int64_t i = 0; i < inter; ++i) {
      const float g = gu[i];
      ac[i] = (g / (1.f + std::exp(-g))) * gu[inter + i];
    }
    x.add_(linear(act, lin + 3 * kPerLinear, group));
  }
  rms_norm(x.data_ptr<float>(), final_norm.data_ptr<float>(), h.data_ptr<float>(), hidden, eps);
  return linear(h, head.data(), group);
}

}  // namespace

TORCH_LIBRARY(llm_tpu, m) {
  m.def(
      "decode_step(Tensor x, Tensor[] linears, Tensor[] norms, Tensor final_norm, Tensor[] head, "
      "Tensor k_cache, Tensor v_cache, Tensor cos, Tensor sin, int pos, int heads, int kv_heads, float eps, "
      "float scale, int group) -> Tensor");
  m.impl("decode_step", &decode_step);
}
