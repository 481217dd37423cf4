// The gradients of a depthwise convolution on CPU, for MindSpore's Custom "aot" op
// (src/kernels/__init__.py builds and loads this file; src/ops.py uses it).
//
// NCHW, float32, kernel k x k (odd), padding k / 2, stride 1 or 2 (read off the shapes:
// the output keeps the input's height at stride 1). MindSpore's own CPU kernels run a
// grouped convolution on plain NCHW as one small GEMM per channel, and its weight gradient
// stalls for seconds under contention (docs/search_engine.md); these loops run each
// channel's plane at once. Every output element is summed in a fixed order whatever the
// thread count, so results do not depend on it.
//
// Signature of a Custom aot kernel: params holds the inputs then the output; shapes[i] has
// ndims[i] dimensions. Returns 0 on success.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

static int g_threads = 0;  // 0: OpenMP's default

extern "C" void DwSetThreads(int n) { g_threads = n; }

static inline int threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

static inline int64_t stride_of(int64_t h, int64_t oh) { return oh == h ? 1 : 2; }

// One past the last output column whose tap j reads inside the input: ow·S + j - P <= W - 1
// (floor division: the bound may be negative, where C++'s division would round towards 0).
static inline int64_t last_ow(int64_t W, int64_t P, int64_t j, int64_t S, int64_t OW) {
  const int64_t span = W - 1 + P - j;
  return span < 0 ? 0 : std::min<int64_t>(OW, span / S + 1);
}

// params: dy (N,C,OH,OW), w (C,1,k,k), x (N,C,H,W) [shape only] -> dx (N,C,H,W)
extern "C" int DwInputGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t N = shapes[3][0], C = shapes[3][1], H = shapes[3][2], W = shapes[3][3];
  const int64_t K = shapes[1][2], OH = shapes[0][2], OW = shapes[0][3], P = K / 2;
  const int64_t S = stride_of(H, OH);
#pragma omp parallel for schedule(static) num_threads(threads())
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const int64_t c = nc % C;
    const float *gp = dy + nc * OH * OW;
    float *dp = dx + nc * H * W;
    std::memset(dp, 0, sizeof(float) * H * W);
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < K; ++j) {
        const float wv = w[(c * K + i) * K + j];
        const int64_t ow0 = std::max<int64_t>(0, (P - j + S - 1) / S);
        const int64_t ow1 = last_ow(W, P, j, S, OW);
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * S + i - P;
          if (ih < 0 || ih >= H) continue;
          float *dr = dp + ih * W + (j - P);
          const float *gr = gp + oh * OW;
          if (S == 1) {
            for (int64_t ow = ow0; ow < ow1; ++ow) dr[ow] += wv * gr[ow];
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) dr[ow * S] += wv * gr[ow];
          }
        }
      }
    }
  }
  return 0;
}

// params: dy (N,C,OH,OW), x (N,C,H,W), w (C,1,k,k) [shape only] -> dw (C,1,k,k)
extern "C" int DwWeightGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  float *dw = static_cast<float *>(params[3]);
  const int64_t N = shapes[1][0], C = shapes[1][1], H = shapes[1][2], W = shapes[1][3];
  const int64_t K = shapes[2][2], OH = shapes[0][2], OW = shapes[0][3], P = K / 2;
  const int64_t S = stride_of(H, OH);
#pragma omp parallel for schedule(static) num_threads(threads())
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < K; ++j) {
        const int64_t ow0 = std::max<int64_t>(0, (P - j + S - 1) / S);
        const int64_t ow1 = last_ow(W, P, j, S, OW);
        double acc = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          const float *xp = x + (n * C + c) * H * W;
          const float *gp = dy + (n * C + c) * OH * OW;
          float part = 0.f;
          for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t ih = oh * S + i - P;
            if (ih < 0 || ih >= H) continue;
            const float *xr = xp + ih * W + (j - P);
            const float *gr = gp + oh * OW;
            if (S == 1) {
              for (int64_t ow = ow0; ow < ow1; ++ow) part += gr[ow] * xr[ow];
            } else {
              for (int64_t ow = ow0; ow < ow1; ++ow) part += gr[ow] * xr[ow * S];
            }
          }
          acc += part;
        }
        dw[(c * K + i) * K + j] = static_cast<float>(acc);
      }
    }
  }
  return 0;
}
