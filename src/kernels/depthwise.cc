// A depthwise convolution on CPU, forward and both gradients, for MindSpore's Custom "aot"
// op (src/kernels/__init__.py builds and loads this file; src/ops.py uses it: the forward
// in training only, so evaluation and exports keep MindSpore's own).
//
// NCHW, float32, kernel k x k (odd), padding k / 2, stride 1 or 2 (read off the shapes:
// the output keeps the input's height at stride 1). MindSpore's own CPU kernels run a
// grouped convolution on plain NCHW as one small GEMM per channel, and its weight gradient
// stalls for seconds under contention (docs/search_engine.md); these run each channel's
// plane as one vectorised loop a tap (see Planes). Every output element is summed in a
// fixed order whatever the thread count, so results do not depend on it.
//
// Signature of a Custom aot kernel: params holds the inputs then the output; shapes[i] has
// ndims[i] dimensions. Returns 0 on success.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

static int g_threads = 0;  // 0: OpenMP's default
static inline int threads();

extern "C" void DwSetThreads(int n) { g_threads = n; }
extern "C" int DwThreads() { return threads(); }

static inline int threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

// One channel's plane, laid out so that every tap is one loop without bounds inside it.
//
// The input, zero-padded by P (Hp x Wp), is split into S x S phase planes of Hh x Wh,
// phase (a, b) holding padded rows a, a + S, ... and columns b, b + S, ... (at stride 1, the
// padded plane itself). Output (oh, ow) at the "wide" flat index q = oh·Wh + ow then reads,
// for tap (i, j), phase (i % S, j % S) at q + (i / S)·Wh + j / S: one loop of OH·Wh elements
// per tap, which the compiler vectorises (the rows alone, 2-28 floats here, are too short
// for that). The Wh - OW extra columns of each output row are computed and dropped (the
// gradients hold them at zero). 3-7x the speed of loops over rows at the Fashion-MNIST
// shapes (docs/search_engine.md).
template <int S>
struct Planes {
  int64_t H, W, K, P, OH, OW, Hh, Wh, len, phase;
  Planes(int64_t h, int64_t w, int64_t k, int64_t oh, int64_t ow)
      : H(h), W(w), K(k), P(k / 2), OH(oh), OW(ow),
        Hh((h + 2 * (k / 2) + S - 1) / S), Wh((w + 2 * (k / 2) + S - 1) / S),
        len(oh * Wh), phase(Hh * Wh + k) {}   // + k: the last taps of the extra columns
  int64_t size() const { return S * S * phase; }
  // where padded (r, c) lies in the phase planes
  int64_t at(int64_t r, int64_t c) const {
    return ((r % S) * S + c % S) * phase + (r / S) * Wh + c / S;
  }
  // tap (i, j)'s offset from q
  int64_t tap(int64_t i, int64_t j) const {
    return ((i % S) * S + j % S) * phase + (i / S) * Wh + j / S;
  }
  // an input plane (H x W) -> its phase planes (size())
  void split(const float *src, float *dst) const {
    std::memset(dst, 0, sizeof(float) * size());
    for (int64_t r = 0; r < H; ++r) {
      if (S == 1) {
        std::memcpy(dst + at(r + P, P), src + r * W, sizeof(float) * W);
      } else {
        for (int64_t c = 0; c < W; ++c) dst[at(r + P, c + P)] = src[r * W + c];
      }
    }
  }
  // phase planes -> the input plane they pad (the input gradient)
  void merge(const float *src, float *dst) const {
    for (int64_t r = 0; r < H; ++r) {
      if (S == 1) {
        std::memcpy(dst + r * W, src + at(r + P, P), sizeof(float) * W);
      } else {
        for (int64_t c = 0; c < W; ++c) dst[r * W + c] = src[at(r + P, c + P)];
      }
    }
  }
  // an output plane (OH x OW) -> wide (len), its extra columns zero; and back
  void widen(const float *src, float *dst) const {
    std::memset(dst, 0, sizeof(float) * len);
    for (int64_t r = 0; r < OH; ++r) std::memcpy(dst + r * Wh, src + r * OW, sizeof(float) * OW);
  }
  void narrow(const float *src, float *dst) const {
    for (int64_t r = 0; r < OH; ++r) std::memcpy(dst + r * OW, src + r * Wh, sizeof(float) * OW);
  }
};

// One plane's taps, each a loop over the wide index (restrict: the loops vectorise). GCC's
// unroll-and-jam of the taps made the gather 2.5-3.5x slower here: it is off for that one.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-loop-unroll-and-jam")))
#endif
static void taps_gather(const float *__restrict src, const float *wc, int64_t K,
                        const int64_t *off, int64_t len, float *__restrict out) {
  std::memset(out, 0, sizeof(float) * len);
  for (int64_t t = 0; t < K * K; ++t) {
    const float wv = wc[t];
    const float *__restrict s = src + off[t];
    for (int64_t q = 0; q < len; ++q) out[q] += wv * s[q];
  }
}

static void taps_scatter(const float *__restrict src, const float *wc, int64_t K,
                         const int64_t *off, int64_t len, float *__restrict out) {
  for (int64_t t = 0; t < K * K; ++t) {
    const float wv = wc[t];
    float *__restrict d = out + off[t];
    for (int64_t q = 0; q < len; ++q) d[q] += wv * src[q];
  }
}

static void taps_dot(const float *__restrict g, const float *__restrict x, int64_t K,
                     const int64_t *off, int64_t len, double *acc) {
  for (int64_t t = 0; t < K * K; ++t) {
    const float *__restrict s = x + off[t];
    float part = 0.f;
    for (int64_t q = 0; q < len; ++q) part += g[q] * s[q];
    acc[t] += part;
  }
}

template <int S>
static std::vector<int64_t> offsets(const Planes<S> &g) {
  std::vector<int64_t> off(g.K * g.K);
  for (int64_t i = 0; i < g.K; ++i)
    for (int64_t j = 0; j < g.K; ++j) off[i * g.K + j] = g.tap(i, j);
  return off;
}

template <int S>
static void forward(const float *x, const float *w, float *y, int64_t N, int64_t C,
                    const Planes<S> &g) {
  const std::vector<int64_t> off = offsets(g);
  const int64_t K = g.K;
#pragma omp parallel num_threads(threads())
  {
    std::vector<float> xs(g.size()), yw(g.len);
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      g.split(x + nc * g.H * g.W, xs.data());
      taps_gather(xs.data(), w + (nc % C) * K * K, K, off.data(), g.len, yw.data());
      g.narrow(yw.data(), y + nc * g.OH * g.OW);
    }
  }
}

template <int S>
static void input_grad(const float *dy, const float *w, float *dx, int64_t N, int64_t C,
                       const Planes<S> &g) {
  const std::vector<int64_t> off = offsets(g);
  const int64_t K = g.K;
#pragma omp parallel num_threads(threads())
  {
    std::vector<float> dyw(g.len), dxs(g.size());
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < N * C; ++nc) {
      g.widen(dy + nc * g.OH * g.OW, dyw.data());
      std::memset(dxs.data(), 0, sizeof(float) * g.size());
      taps_scatter(dyw.data(), w + (nc % C) * K * K, K, off.data(), g.len, dxs.data());
      g.merge(dxs.data(), dx + nc * g.H * g.W);
    }
  }
}

template <int S>
static void weight_grad(const float *dy, const float *x, float *dw, int64_t N, int64_t C,
                        const Planes<S> &g) {
  const std::vector<int64_t> off = offsets(g);
  const int64_t K = g.K;
#pragma omp parallel num_threads(threads())
  {
    std::vector<float> xs(g.size()), dyw(g.len);
    std::vector<double> acc(K * K);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t n = 0; n < N; ++n) {
        g.split(x + (n * C + c) * g.H * g.W, xs.data());
        g.widen(dy + (n * C + c) * g.OH * g.OW, dyw.data());
        taps_dot(dyw.data(), xs.data(), K, off.data(), g.len, acc.data());
      }
      for (int64_t t = 0; t < K * K; ++t) dw[c * K * K + t] = static_cast<float>(acc[t]);
    }
  }
}

// Runs f(N, C, planes) with the plane layout of the call's stride: `full` is the shape of the
// (N,C,H,W) tensor, `out` that of the (N,C,OH,OW) one, K the kernel size; the output height
// tells the stride (OH == H: 1, else 2).
template <class F>
static int by_stride(const int64_t *full, const int64_t *out, int64_t K, F f) {
  const int64_t N = full[0], C = full[1], H = full[2], W = full[3], OH = out[2], OW = out[3];
  if (OH == H) f(N, C, Planes<1>(H, W, K, OH, OW));
  else f(N, C, Planes<2>(H, W, K, OH, OW));
  return 0;
}

// params: x (N,C,H,W), w (C,1,k,k) -> y (N,C,OH,OW)
extern "C" int DwForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra) {
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  return by_stride(shapes[0], shapes[2], shapes[1][2],
                   [&](int64_t N, int64_t C, const auto &g) { forward(x, w, y, N, C, g); });
}

// params: dy (N,C,OH,OW), w (C,1,k,k), x (N,C,H,W) [shape only] -> dx (N,C,H,W)
extern "C" int DwInputGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[3]);
  return by_stride(shapes[3], shapes[0], shapes[1][2],
                   [&](int64_t N, int64_t C, const auto &g) { input_grad(dy, w, dx, N, C, g); });
}

// params: dy (N,C,OH,OW), x (N,C,H,W), w (C,1,k,k) [shape only] -> dw (C,1,k,k)
extern "C" int DwWeightGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  float *dw = static_cast<float *>(params[3]);
  return by_stride(shapes[1], shapes[0], shapes[2][2],
                   [&](int64_t N, int64_t C, const auto &g) { weight_grad(dy, x, dw, N, C, g); });
}

// The stride-2 forward under another name: PyNative caches a Custom op's inferred output shape
// by its function and input shapes, so one name for both strides gave a stride-2 call the
// stride-1 output shape (a buffer too small: a crash, non-finite weights) after a stride-1
// call on the same shapes. The shapes still decide the stride inside.
extern "C" int DwForwardS2(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra) {
  return DwForward(nparam, params, ndims, shapes, dtypes, stream, extra);
}
