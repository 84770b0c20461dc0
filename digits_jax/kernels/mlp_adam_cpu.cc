// A block of K training steps of the lab's MLP (Dense+ReLU layers, softmax
// cross-entropy, Keras's Adam) as one XLA FFI call for the CPU.
//
// Why: at the lab's batch sizes (5 to 42) a step is a few hundred thousand
// multiply-adds, and XLA:CPU spends most of a step outside arithmetic: ~30
// separately dispatched thunks, a materialised weight gradient, and three passes
// over every parameter array for Adam. Here a step reads each example's non-zero
// inputs straight from the images' bytes, multiplies them with the weights a block of
// rows at a time (the block in L1 serves every example), forms the weight gradient of
// a block of rows in L1 and applies Adam to it there, in one aligned pass over p, m
// and v. Adam's square root runs on the multiply-add units (Sqrt), so that the
// divider does only its divide. The math is train_state.py's (keras_adam, optax's
// softmax cross-entropy, jax.nn.relu's gradient), checked against it by
// tests/test_cpu_kernel.py; only the summation order differs. Every replacement of an
// instruction (Sqrt, Scale255) is exact on every input (tests/test_kernel_exactness.py),
// and the lab's configs train to the bits recorded before them
// (tests/test_lab_regression.py). benchmarks/kernel_breakdown.cc times its phases.
//
// One call trains R replicas (independent models, e.g. seeds) on one shared dataset.
// Buffers: images u8[N, ...] (row = one flattened image), labels s32[N],
// index s32[R, K, B], mask pred[R, K, B], count s32[R] (Adam steps already taken),
// then 3 * 2L f32 arrays, each with the leading replica axis R: params (W0, b0, ...,
// W_{L-1}, b_{L-1}), first and second moments in the same order. Results: metric sums
// f32[R, 3] (loss, correct, count) over the block, then the updated 3 * 2L arrays
// (aliased to the inputs). Attributes: b1, b2, c1 = 1 - b1, c2 = 1 - b2, eps, lr
// (float32), threads and layout (how replicas share the threads, see TrainAll). A
// replica's rows are split into two lanes whether it runs on 1 or 2 threads, so its
// result does not depend on threads or layout: replica r is bit for bit its R = 1 run.

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Phase marks for benchmarks/kernel_breakdown.cc, which defines DIGITS_JAX_PHASES (a
// function that charges the time since the thread's last mark to its current phase and
// starts `phase`) before it includes this file; in the library they compile to nothing.
#ifdef DIGITS_JAX_PHASES
#define PHASE(phase) DIGITS_JAX_PHASES(Phase::phase)
#else
#define PHASE(phase) ((void)0)
#endif

namespace {

struct Layer {
  int64_t in, out;
  float *w, *b, *mw, *mb, *vw, *vb;
};

// std::vector's storage on 64-byte boundaries: a vector of 16 floats that straddles two
// cache lines costs two accesses, and defeats store-to-load forwarding.
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <typename U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};
using Floats = std::vector<float, Aligned64<float>>;

struct Adam {
  float lr_t, c1, c2, eps;  // c1 = 1 - b1, c2 = 1 - b2 (as rounded by the caller).
};

// 16 floats in a vector register (GCC/Clang vector extension: zmm with AVX-512, two ymm
// with AVX2); loads and stores go through memcpy, so any alignment is fine. LoadN/StoreN
// move the first n (<= 16) floats only (the other lanes read as zero).
typedef float V16 __attribute__((vector_size(64)));
inline V16 Load(const float* p) { V16 v; std::memcpy(&v, p, sizeof v); return v; }
inline void Store(float* p, V16 v) { std::memcpy(p, &v, sizeof v); }
inline V16 LoadN(const float* p, int64_t n) {
#ifdef __AVX512F__
  return reinterpret_cast<V16>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p));
#else
  V16 v = {};
  std::memcpy(&v, p, n * sizeof(float));
  return v;
#endif
}
inline void StoreN(float* p, V16 v, int64_t n) {
#ifdef __AVX512F__
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
#else
  std::memcpy(p, &v, n * sizeof(float));
#endif
}

// Each lane's correctly rounded square root, bit for bit what the divider's vsqrtps gives,
// but computed on the multiply-add units where AVX-512 is there, so that the divider,
// which Adam also needs for its divide, does half the work: an estimate (vrsqrt14ps), one
// Newton step for the root and its half-reciprocal, and Markstein's correction. Equal to
// vsqrtps for every one of the 2^32 inputs, with denormals flushed or not
// (tests/test_kernel_exactness.py); lanes outside [2^-100, 2^100) (zero, tiny, huge,
// negative, NaN), where the correction's residual would underflow, take vsqrtps.
inline V16 Sqrt(V16 x) {
#ifdef __AVX512F__
  const __m512 v = reinterpret_cast<__m512>(x), half = _mm512_set1_ps(0.5f);
  const __m512 y = _mm512_rsqrt14_ps(v);
  __m512 s = _mm512_mul_ps(v, y), h = _mm512_mul_ps(half, y);
  const __m512 r = _mm512_fnmadd_ps(s, h, half);
  s = _mm512_fmadd_ps(s, r, s);
  h = _mm512_fmadd_ps(h, r, h);
  s = _mm512_fmadd_ps(_mm512_fnmadd_ps(s, s, v), h, s);
  const __mmask16 special = _mm512_cmp_ps_mask(v, _mm512_set1_ps(0x1p-100f), _CMP_LT_OQ) |
                            _mm512_cmp_ps_mask(v, _mm512_set1_ps(0x1p100f), _CMP_NLT_UQ);
  if (special) s = _mm512_mask_sqrt_ps(s, special, v);
  return reinterpret_cast<V16>(s);
#else
  for (int k = 0; k < 16; ++k) x[k] = std::sqrt(x[k]);
  return x;
#endif
}

// Byte u scaled to [0, 1] exactly as u / 255.0f (the XLA step's correctly rounded divide),
// without the divider: q = u * RN(1/255), corrected once by its exact residual; equal to
// u / 255.0f for all 256 bytes (tests/test_kernel_exactness.py).
inline V16 Scale255(V16 u) {
  const float r = 1.0f / 255.0f;
#ifdef __AVX512F__
  const __m512 x = reinterpret_cast<__m512>(u), rv = _mm512_set1_ps(r);
  const __m512 q = _mm512_mul_ps(x, rv);
  const __m512 e = _mm512_fnmadd_ps(q, _mm512_set1_ps(255.0f), x);
  return reinterpret_cast<V16>(_mm512_fmadd_ps(e, rv, q));
#else
  for (int k = 0; k < 16; ++k) u[k] = u[k] / 255.0f;
  return u;
#endif
}

// Keras's Adam (keras_adam) on the first n (<= 16) of 16 parameters, from their gradient
// g: m, v move towards g, then p += -lr_t * m / (sqrt(v) + eps). The arithmetic of
// AdamUpdate below, lane by lane.
inline void Adam16(float* __restrict p, float* __restrict m, float* __restrict v, V16 g,
                   const Adam& a, int64_t n = 16) {
  V16 mj = n == 16 ? Load(m) : LoadN(m, n), vj = n == 16 ? Load(v) : LoadN(v, n);
  const V16 pj = n == 16 ? Load(p) : LoadN(p, n);
  mj = mj + (g - mj) * a.c1;
  vj = vj + (g * g - vj) * a.c2;
  const V16 pn = pj + (-a.lr_t * mj) / (Sqrt(vj) + a.eps);
  if (n == 16) {
    Store(m, mj), Store(v, vj), Store(p, pn);
  } else {
    StoreN(m, mj, n), StoreN(v, vj, n), StoreN(p, pn, n);
  }
}

// Adam16 over n contiguous parameters, in vectors aligned to 64 bytes at p (a vector
// that straddles two cache lines costs two accesses; m and v share p's alignment when
// their arrays do, as XLA's buffers do).
inline void AdamUpdate(float* __restrict p, float* __restrict m, float* __restrict v,
                       const float* __restrict g, int64_t n, const Adam& a) {
  int64_t j = std::min<int64_t>(n, (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64 / 4);
  if (j > 0) Adam16(p, m, v, LoadN(g, j), a, j);
  for (; j + 16 <= n; j += 16) Adam16(p + j, m + j, v + j, Load(g + j), a);
  if (j < n) Adam16(p + j, m + j, v + j, LoadN(g + j, n - j), a, n - j);
}

// A dot product in a fixed order: 16 running sums (vectorisable without reassociating
// floats), added pairwise, then the tail.
inline float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float acc[16] = {0.0f};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int k = 0; k < 16; ++k) acc[k] += a[j + k] * b[j + k];
  for (int w = 8; w >= 1; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  float s = acc[0];
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// Whether InputGradient reads a layer's deltas transposed (fewer than 16 columns: the
// output layer), and the transposed rows' length: the batch padded to whole vectors.
inline bool UsesDeltaT(int64_t out) { return out < 16; }
inline int64_t PaddedBatch(int64_t batch) { return (batch + 15) / 16 * 16; }

// dprev[b, i] = act[b, i] > 0 ? delta[b, :] . w[i, :] : 0 for rows [r0, r1) and every
// example: the gradient with respect to a hidden layer's output (jax.nn.relu's gradient is
// 1 where the output is > 0), from the weights before their update. Where UsesDeltaT(out),
// a chain of multiply-adds in column order from zero, 16 examples at once from delta
// transposed (deltaT[c * PaddedBatch(batch) + b]); else Dot.
void InputGradient(const float* __restrict act, const float* __restrict delta,
                   const float* __restrict deltaT, int64_t batch, int64_t in, int64_t out,
                   const float* __restrict w, int64_t r0, int64_t r1, float* __restrict dprev) {
  if (!UsesDeltaT(out)) {
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t b = 0; b < batch; ++b)
        dprev[b * in + i] = act[b * in + i] > 0.0f ? Dot(delta + b * out, w + i * out, out) : 0.0f;
    return;
  }
  const int64_t padded = PaddedBatch(batch);
  constexpr int kRows = 4;  // Rows at once: independent chains, so the adds overlap.
  for (int64_t b0 = 0; b0 < batch; b0 += 16) {
    for (int64_t i0 = r0; i0 < r1; i0 += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - i0));
      V16 s[kRows] = {};
      for (int64_t c = 0; c < out; ++c) {
        const V16 d = Load(deltaT + c * padded + b0);
        for (int r = 0; r < kRows; ++r) s[r] += w[(i0 + std::min(r, rows - 1)) * out + c] * d;
      }
      for (int r = 0; r < rows; ++r)
        for (int64_t b = b0; b < std::min(batch, b0 + 16); ++b)
          dprev[b * in + i0 + r] = act[b * in + i0 + r] > 0.0f ? s[r][b - b0] : 0.0f;
    }
  }
}

// [begin, end) of thread t's share of n items; cut points are multiples of `align`.
struct Range { int64_t begin, end; };
Range Part(int64_t n, int t, int threads, int64_t align) {
  auto cut = [&](int k) {
    if (k >= threads) return n;
    return std::min(n, (n * k + threads - 1) / threads + align - 1) / align * align;
  };
  return {cut(t), cut(t + 1)};
}

// A layer input's non-zeros for one lane's rows, by example: idx/val[b * in + rows.begin
// + k] for k < count[b * kLanes + lane], rows in increasing order. Most pixels, and every
// inactive ReLU, are zero: skipping their products leaves every sum's bits unchanged.
constexpr int kLanes = 2;
struct Nonzeros {
  std::vector<int32_t> idx, count;
  Floats val;
  void Resize(int64_t rows, int64_t batch) {
    idx.resize(rows * batch), val.resize(rows * batch), count.resize(batch * kLanes);
  }
  // From a layer's float input act[batch, in] (a hidden layer's ReLU output).
  void Build(const float* act, int64_t in, int64_t batch, Range rows, int lane) {
    for (int64_t b = 0; b < batch; ++b) {  // Branch-free compaction, reading act in order.
      const float* a = act + b * in;
      int32_t* ix = idx.data() + b * in + rows.begin;
      float* vx = val.data() + b * in + rows.begin;
      int32_t k = 0;
      int64_t i = rows.begin;
#ifdef __AVX512F__
      for (; i + 16 <= rows.end; i += 16) {
        const __m512 v = _mm512_loadu_ps(a + i);
        k += Compress(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ), v, i, vx + k,
                      ix + k);
      }
#endif
      for (; i < rows.end; ++i) {
        ix[k] = static_cast<int32_t>(i);
        vx[k] = a[i];
        k += a[i] != 0.0f;
      }
      count[b * kLanes + lane] = k;
    }
  }
  // From the images' bytes, scaled as u / 255.0f (the first layer's input).
  void BuildFromBytes(const uint8_t* images, const int32_t* which, int64_t pixels,
                      int64_t batch, Range rows, int lane) {
    for (int64_t b = 0; b < batch; ++b) {
      const uint8_t* src = images + static_cast<int64_t>(which[b]) * pixels;
      int32_t* ix = idx.data() + b * pixels + rows.begin;
      float* vx = val.data() + b * pixels + rows.begin;
      int32_t k = 0;
      int64_t i = rows.begin;
#ifdef __AVX512F__
      for (; i + 16 <= rows.end; i += 16) {
        const __m128i u = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        const __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(u));
        k += Compress(_mm_cmpneq_epu8_mask(u, _mm_setzero_si128()),
                      reinterpret_cast<__m512>(Scale255(reinterpret_cast<V16>(x))), i, vx + k,
                      ix + k);
      }
#endif
      for (; i < rows.end; ++i) {
        ix[k] = static_cast<int32_t>(i);
        vx[k] = static_cast<float>(src[i]) / 255.0f;
        k += src[i] != 0;
      }
      count[b * kLanes + lane] = k;
    }
  }
  const int32_t* Rows(int64_t b, int64_t in, Range rows) const {
    return idx.data() + b * in + rows.begin;
  }
  const float* Values(int64_t b, int64_t in, Range rows) const {
    return val.data() + b * in + rows.begin;
  }

 private:
#ifdef __AVX512F__
  // Appends the lanes of v selected by nz, and their row numbers i.., to vx and ix.
  static int32_t Compress(__mmask16 nz, __m512 v, int64_t i, float* vx, int32_t* ix) {
    const __m512i iv = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(i)),
                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                          11, 12, 13, 14, 15));
    _mm512_storeu_ps(vx, _mm512_maskz_compress_ps(nz, v));
    _mm512_storeu_si512(ix, _mm512_maskz_compress_epi32(nz, iv));
    return __builtin_popcount(nz);
  }
#endif
};

// Column blocks of up to kBlock vectors of 16 (a block's sums stay in registers), and
// fn(K, j, tail) on each: K vectors from column j, the last holding `tail` columns.
constexpr int kBlock = 8;
template <typename Fn>
inline void ColumnBlocks(int64_t out, Fn fn) {
  int64_t j = 0;
  for (; out - j >= 16 * kBlock; j += 16 * kBlock) fn(std::integral_constant<int, kBlock>(), j, 16);
  const int64_t rest = out - j;
  if (rest == 0) return;
  const int64_t tail = rest % 16 == 0 ? 16 : rest % 16;
  switch ((rest + 15) / 16) {
    case 1: return fn(std::integral_constant<int, 1>(), j, tail);
    case 2: return fn(std::integral_constant<int, 2>(), j, tail);
    case 3: return fn(std::integral_constant<int, 3>(), j, tail);
    case 4: return fn(std::integral_constant<int, 4>(), j, tail);
    case 5: return fn(std::integral_constant<int, 5>(), j, tail);
    case 6: return fn(std::integral_constant<int, 6>(), j, tail);
    default: return fn(std::integral_constant<int, 7>(), j, tail);
  }
}

// acc[k] (+)= x * row[16k ..] for the K vectors of a column block (the last: `tail` columns).
template <int K>
inline void LoadBlock(const float* p, int64_t tail, V16 (&v)[K]) {
  for (int k = 0; k + 1 < K; ++k) v[k] = Load(p + 16 * k);
  v[K - 1] = tail == 16 ? Load(p + 16 * (K - 1)) : LoadN(p + 16 * (K - 1), tail);
}
template <int K>
inline void StoreBlock(float* p, int64_t tail, const V16 (&v)[K]) {
  for (int k = 0; k + 1 < K; ++k) Store(p + 16 * k, v[k]);
  StoreN(p + 16 * (K - 1), v[K - 1], tail);
}

// Rows per block of a layer's rows: a block of W (or of its gradient) fits in L1 (16 KB).
inline int64_t BlockRows(int64_t out) { return std::max<int64_t>(1, 4096 / out); }

// Rows [r0, r1) of partial[b, :] += act[b, rows] @ w[rows, :], a lane's share of a layer's
// matmul: each example's sum runs over its non-zero rows in increasing order (pos[b]: its
// first non-zero at or after r0). The block's weights, read from L2 once, serve every
// example from L1.
void ForwardRows(const Nonzeros& nzs, int64_t batch, const Layer& l, Range rows, int lane,
                 int64_t r0, int64_t r1, float* __restrict partial, int32_t* pos) {
  const int64_t out = l.out;
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* ix = nzs.Rows(b, l.in, rows);
    const float* vx = nzs.Values(b, l.in, rows);
    const int32_t begin = pos[b], n = nzs.count[b * kLanes + lane];
    int32_t end = begin;
    while (end < n && ix[end] < r1) ++end;
    if (end == begin) continue;
    pos[b] = end;
    ColumnBlocks(out, [&](auto kc, int64_t j, int64_t tail) {
      constexpr int K = decltype(kc)::value;
      V16 acc[K], w[K];
      LoadBlock<K>(partial + b * out + j, tail, acc);
      for (int32_t e = begin; e < end; ++e) {
        LoadBlock<K>(l.w + ix[e] * out + j, tail, w);
        for (int k = 0; k < K; ++k) acc[k] += vx[e] * w[k];
      }
      StoreBlock<K>(partial + b * out + j, tail, acc);
    });
  }
}

// partial[b, :] = act[b, rows] @ w[rows, :], a block of rows at a time.
__attribute__((noinline)) void ForwardPartial(const Nonzeros& nzs, int64_t batch,
                                              const Layer& l, Range rows, int lane,
                                              float* __restrict partial,
                                              std::vector<int32_t>& pos) {
  std::fill(partial, partial + batch * l.out, 0.0f);
  pos.assign(batch, 0);
  for (int64_t r0 = rows.begin; r0 < rows.end; r0 += BlockRows(l.out))
    ForwardRows(nzs, batch, l, rows, lane, r0, std::min(rows.end, r0 + BlockRows(l.out)),
                partial, pos.data());
}

// out[b, cols] = sum of the lanes' partials + bias (then ReLU for hidden layers).
void Combine(const Floats* partials, int64_t batch, const Layer& l, bool relu,
             Range cols, float* __restrict out) {
  for (int64_t b = 0; b < batch; ++b) {
    const float* __restrict p0 = partials[0].data() + b * l.out;
    const float* __restrict p1 = partials[1].data() + b * l.out;
    float* __restrict o = out + b * l.out;
    for (int64_t j = cols.begin; j < cols.end; ++j) o[j] = (p0[j] + p1[j]) + l.b[j];
    if (relu)
      for (int64_t j = cols.begin; j < cols.end; ++j) o[j] = std::max(o[j], 0.0f);
  }
}

// Rows `rows` of layer l's backward pass, a block of rows at a time: the gradient with
// respect to the layer's input (if `dprev`; from the weights before their update,
// ReLU-masked), the block's weight gradient in `gbuf` (in L1: each element summed over
// the examples in order, as outer products of each example's non-zero inputs and its
// delta), then Adam over the block's p, m and v in one aligned pass. With `next`, the next
// step's forward pass over the block's rows follows at once, while its updated weights are
// in L1 (next_partial as ForwardPartial would leave it, for the same bits).
__attribute__((noinline)) void BackwardAdam(const float* __restrict act, const Nonzeros& nzs,
                                            const float* __restrict delta,
                                            const float* __restrict deltaT, int64_t batch,
                                            const Layer& l, const Adam& adam, Range rows,
                                            int lane, float* __restrict dprev,
                                            Floats& gbuf, std::vector<int32_t>& pos,
                                            const Nonzeros* next, float* next_partial) {
  const int64_t out = l.out, step = BlockRows(out);
  gbuf.resize(step * out + 16);
  pos.assign(2 * batch, 0);  // This step's cursors, then the next step's.
  if (next != nullptr) std::fill(next_partial, next_partial + batch * out, 0.0f);
  for (int64_t r0 = rows.begin; r0 < rows.end; r0 += step) {
    const int64_t r1 = std::min(rows.end, r0 + step);
    PHASE(kBackward);
    if (dprev != nullptr)
      InputGradient(act, delta, deltaT, batch, l.in, out, l.w, r0, r1, dprev);
    // The block's gradient, placed as the block's weights are within a cache line.
    float* grad = gbuf.data() + reinterpret_cast<uintptr_t>(l.w + r0 * out) % 64 / 4;
    std::fill(grad, grad + (r1 - r0) * out, 0.0f);
    for (int64_t b = 0; b < batch; ++b) {
      const int32_t* ix = nzs.Rows(b, l.in, rows);
      const float* vx = nzs.Values(b, l.in, rows);
      const int32_t begin = pos[b], n = nzs.count[b * kLanes + lane];
      int32_t end = begin;
      while (end < n && ix[end] < r1) ++end;
      if (end == begin) continue;
      pos[b] = end;
      ColumnBlocks(out, [&](auto kc, int64_t j, int64_t tail) {
        constexpr int K = decltype(kc)::value;
        V16 d[K], g[K];
        LoadBlock<K>(delta + b * out + j, tail, d);
        for (int32_t e = begin; e < end; ++e) {
          float* row = grad + (ix[e] - r0) * out + j;
          LoadBlock<K>(row, tail, g);
          for (int k = 0; k < K; ++k) g[k] += vx[e] * d[k];
          StoreBlock<K>(row, tail, g);
        }
      });
    }
    PHASE(kAdam);
    const int64_t off = r0 * out;
    AdamUpdate(l.w + off, l.mw + off, l.vw + off, grad, (r1 - r0) * out, adam);
    if (next != nullptr) {
      PHASE(kForward);
      ForwardRows(*next, batch, l, rows, lane, r0, r1, next_partial, pos.data() + batch);
    }
  }
}

// Starts a thread running fn() on another CPU than its creator's. Linux starts a new
// thread on its creator's CPU when the others look busy and moves it only milliseconds
// later; meanwhile the two share a core and every barrier costs a context switch (v6 in
// calls of 512 steps: 22 of 57 calls started so, 15 us a step slower on average). The
// thread pins itself to the k-th other CPU this process may use, then unpins (restores
// the mask), so the scheduler keeps its say from there on. Elsewhere: a plain thread.
template <typename Fn>
std::thread Spawn(int k, Fn fn) {
#ifdef __linux__
  const int creator = sched_getcpu();
  return std::thread([creator, k, fn] {
    cpu_set_t allowed, one;
    if (creator >= 0 && sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
      std::vector<int> others;
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &allowed) && c != creator) others.push_back(c);
      if (!others.empty()) {
        CPU_ZERO(&one);
        CPU_SET(others[(k - 1) % others.size()], &one);
        if (sched_setaffinity(0, sizeof one, &one) == 0)
          sched_setaffinity(0, sizeof allowed, &allowed);
      }
    }
    fn();
  });
#else
  return std::thread(fn);
#endif
}

// Sense-reversing barrier for the block's few threads (spins, then yields).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() {
    if (n_ == 1) return;
    const int phase = phase_.load(std::memory_order_relaxed);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      phase_.store(phase + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins)
      if (spins > (1 << 14)) std::this_thread::yield();  // ~10 us, then share the core.
  }

 private:
  const int n_;
  std::atomic<int> count_{0}, phase_{0};
};

// Work is split into two lanes (kLanes) by weight rows, whatever the thread count, so
// that sums are added in the same order (and results are identical) with 1 or 2 threads,
// and each row of W, m and v stays in one core's cache from step to step.

struct Shared {
  const uint8_t* images;
  const int32_t* labels;
  const int32_t* index;
  const bool* mask;
  int64_t steps, batch, pixels, classes;
  int32_t t0;
  float b1, b2, c1, c2, eps, lr;
  std::vector<Layer> layers;
  // acts[l + 1] = layer l's output (acts[0] stays empty: the input's non-zeros are read
  // from the images' bytes).
  std::vector<Floats> acts, deltas;
  std::vector<Nonzeros> nzs;  // Of each hidden layer's input (nzs[0] is unused).
  Nonzeros inputs[2];  // Of the first layer's input: step s's is inputs[s % 2].
  // Per layer, so that no lane overwrites a layer's partials while another reads them.
  std::vector<std::array<Floats, kLanes>> partials;
  float sums[3] = {0.0f, 0.0f, 0.0f};
};

// Every thread runs this loop for its lanes; lane 0 also computes the loss.
constexpr int64_t kAhead = 2;  // Steps ahead that RunSteps fetches the images of.
void RunSteps(Shared& sh, Barrier& barrier, int tid, int threads) {
  const int64_t batch = sh.batch, pixels = sh.pixels, classes = sh.classes;
  const int64_t num_layers = static_cast<int64_t>(sh.layers.size());
  const int lane0 = threads == 1 ? 0 : tid, lane1 = threads == 1 ? kLanes : tid + 1;
  Floats gbuf, deltaT;
  std::vector<int32_t> pos;
  // Step s's input non-zeros are inputs[s % 2]: each step reads the next one's, and its
  // backward pass of the first layer runs the next step's first forward layer (BackwardAdam's
  // `next`), so only step 0 of the call runs that layer on its own.
  auto read_input = [&](int64_t s) {
    for (int lane = lane0; lane < lane1; ++lane) {  // Each lane reads only its pixels.
      const Range px = Part(pixels, lane, kLanes, 16);
      const int32_t* idx = sh.index + s * batch;
      sh.inputs[s % 2].BuildFromBytes(sh.images, idx, pixels, batch, px, lane);
      if (s + kAhead < sh.steps) {  // Fetch a later step's images from memory meanwhile.
        for (int64_t b = 0; b < batch; ++b) {
          const uint8_t* next = sh.images + static_cast<int64_t>(idx[kAhead * batch + b]) * pixels;
          for (int64_t i = px.begin; i < px.end; i += 64) __builtin_prefetch(next + i);
        }
      }
    }
  };
  auto nonzeros = [&](int64_t l, int64_t s) -> const Nonzeros& {
    return l == 0 ? sh.inputs[s % 2] : sh.nzs[l];
  };
  for (int64_t s = 0; s < sh.steps; ++s) {
    const int32_t* idx = sh.index + s * batch;
    const bool* msk = sh.mask + s * batch;
    for (int64_t l = 0; l < num_layers; ++l) {
      const Layer& ly = sh.layers[l];
      if (l > 0 || s == 0) {
        PHASE(kInput);
        if (l == 0) read_input(s);
        PHASE(kForward);
        for (int lane = lane0; lane < lane1; ++lane)
          ForwardPartial(nonzeros(l, s), batch, ly, Part(ly.in, lane, kLanes, 16), lane,
                         sh.partials[l][lane].data(), pos);
        PHASE(kWait);
        barrier.Wait();
      }
      PHASE(kForward);
      if (l + 1 < num_layers) {  // Each lane completes the columns that are its next rows.
        for (int lane = lane0; lane < lane1; ++lane) {
          const Range cols = Part(ly.out, lane, kLanes, 16);
          Combine(sh.partials[l].data(), batch, ly, true, cols, sh.acts[l + 1].data());
          sh.nzs[l + 1].Build(sh.acts[l + 1].data(), ly.out, batch, cols, lane);
        }
      }
    }
    PHASE(kLoss);
    if (tid == 0) {  // Softmax cross-entropy (optax's formulation), metrics, d loss / d logits.
      const Layer& last = sh.layers[num_layers - 1];
      Combine(sh.partials[num_layers - 1].data(), batch, last, false, {0, classes},
              sh.acts[num_layers].data());
      float cnt = 0.0f;
      for (int64_t b = 0; b < batch; ++b) cnt += msk[b] ? 1.0f : 0.0f;
      const float denom = std::max(cnt, 1.0f);
      float step_loss = 0.0f, step_correct = 0.0f;
      const float* logits = sh.acts[num_layers].data();
      float* dlogits = sh.deltas[num_layers].data();
      for (int64_t b = 0; b < batch; ++b) {
        const float* z = logits + b * classes;
        float* dz = dlogits + b * classes;
        const int32_t y = sh.labels[idx[b]];
        int64_t arg = 0;
        for (int64_t c = 1; c < classes; ++c)
          if (z[c] > z[arg]) arg = c;
        const float zmax = z[arg];
        float se = 0.0f;
        for (int64_t c = 0; c < classes; ++c) {
          dz[c] = std::exp(z[c] - zmax);
          se += dz[c];
        }
        const float w = msk[b] ? 1.0f : 0.0f;
        step_loss += (std::log(se) - (z[y] - zmax)) * w;
        step_correct += (arg == y) ? w : 0.0f;
        const float scale = w / denom;
        for (int64_t c = 0; c < classes; ++c)
          dz[c] = (dz[c] / se - (c == y ? 1.0f : 0.0f)) * scale;
      }
      sh.sums[0] += step_loss;
      sh.sums[1] += step_correct;
      sh.sums[2] += cnt;
    }
    PHASE(kWait);
    barrier.Wait();
    PHASE(kInput);
    if (s + 1 < sh.steps) read_input(s + 1);
    const float t = static_cast<float>(sh.t0 + s + 1);
    const Adam adam{sh.lr * std::sqrt(1.0f - std::pow(sh.b2, t)) / (1.0f - std::pow(sh.b1, t)),
                    sh.c1, sh.c2, sh.eps};
    for (int64_t l = num_layers - 1; l >= 0; --l) {
      const Layer& ly = sh.layers[l];
      const float* delta = sh.deltas[l + 1].data();
      if (l > 0 && UsesDeltaT(ly.out)) {  // For InputGradient.
        const int64_t padded = PaddedBatch(batch);
        deltaT.assign(ly.out * padded, 0.0f);
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t c = 0; c < ly.out; ++c) deltaT[c * padded + b] = delta[b * ly.out + c];
      }
      for (int lane = lane0; lane < lane1; ++lane) {
        PHASE(kAdam);
        if (lane == kLanes - 1) {  // The bias: its gradient is the sum of the deltas.
          gbuf.assign(ly.out, 0.0f);
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t j = 0; j < ly.out; ++j) gbuf[j] += delta[b * ly.out + j];
          AdamUpdate(ly.b, ly.mb, ly.vb, gbuf.data(), ly.out, adam);
        }
        const bool fuse = l == 0 && s + 1 < sh.steps;
        BackwardAdam(sh.acts[l].data(), nonzeros(l, s), delta, deltaT.data(), batch, ly, adam,
                     Part(ly.in, lane, kLanes, 16), lane,
                     l > 0 ? sh.deltas[l].data() : nullptr, gbuf, pos,
                     fuse ? &sh.inputs[(s + 1) % 2] : nullptr,
                     fuse ? sh.partials[0][lane].data() : nullptr);
      }
      PHASE(kWait);
      barrier.Wait();
    }
  }
}

// The call's buffers for every replica: what TrainReplica reads its replica's slice of.
struct Inputs {
  const uint8_t* images;
  const int32_t* labels;
  const int32_t* index;  // [R, K, B].
  const bool* mask;      // [R, K, B].
  const int32_t* count;  // [R].
  int64_t replicas, steps, batch, pixels;
  std::vector<std::array<int64_t, 2>> dims;  // Per layer: (in, out).
  std::vector<float*> state;  // 6L replica-stacked arrays: params, mu, nu as (W, b) per layer.
  float b1, b2, c1, c2, eps, lr;
};

// Fills `sh` for replica r: pointers into its slice of every buffer, and its scratch.
void SetUp(const Inputs& in, int64_t r, Shared& sh) {
  const int64_t num_layers = static_cast<int64_t>(in.dims.size()), p = 2 * num_layers;
  sh.steps = in.steps, sh.batch = in.batch, sh.pixels = in.pixels;
  sh.classes = in.dims.back()[1];
  sh.images = in.images, sh.labels = in.labels;
  sh.index = in.index + r * in.steps * in.batch;
  sh.mask = in.mask + r * in.steps * in.batch;
  sh.t0 = in.count[r];
  sh.b1 = in.b1, sh.b2 = in.b2, sh.c1 = in.c1, sh.c2 = in.c2, sh.eps = in.eps, sh.lr = in.lr;
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t rows = in.dims[l][0], out = in.dims[l][1];
    auto w = [&](int64_t k) { return in.state[k] + r * rows * out; };
    auto b = [&](int64_t k) { return in.state[k] + r * out; };
    sh.layers.push_back({rows, out, w(2 * l), b(2 * l + 1), w(p + 2 * l), b(p + 2 * l + 1),
                         w(2 * p + 2 * l), b(2 * p + 2 * l + 1)});
  }
  sh.acts.resize(num_layers + 1);
  sh.deltas.resize(num_layers + 1);
  sh.nzs.resize(num_layers);
  for (auto& input : sh.inputs) input.Resize(sh.pixels, sh.batch);
  sh.partials.resize(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    sh.acts[l + 1].resize(sh.batch * sh.layers[l].out);
    sh.deltas[l + 1].resize(sh.batch * sh.layers[l].out);
    if (l > 0) sh.nzs[l].Resize(sh.layers[l].in, sh.batch);
    for (auto& partial : sh.partials[l]) partial.resize(sh.batch * sh.layers[l].out);
  }
}

// Trains replica r's block on `team` threads (1, or kLanes: its lanes split over them);
// the result is the same bits either way. Writes its metric sums to sums[3r .. 3r + 2].
void TrainReplica(const Inputs& in, int64_t r, int team, float* sums) {
  Shared sh;
  SetUp(in, r, sh);
  Barrier barrier(team);
  std::vector<std::thread> helpers;
  for (int tid = 1; tid < team; ++tid)
    helpers.push_back(
        Spawn(tid, [&sh, &barrier, tid, team] { RunSteps(sh, barrier, tid, team); }));
  RunSteps(sh, barrier, 0, team);
  for (auto& h : helpers) h.join();
  std::copy(sh.sums, sh.sums + 3, sums + 3 * r);
}

// How the replicas share the threads (attribute `layout`; cpu_kernel.LAYOUTS names them).
// kLanesLayout: replicas in turn, each on up to kLanes threads (the one-replica path).
// kReplicaPerThread: `threads` replicas at once, one per thread, each single-threaded
// (no barrier between threads, so no thread waits for another inside a step); a remainder
// of fewer replicas than threads trains after them, in turn, on the lanes.
constexpr int64_t kLanesLayout = 0, kReplicaPerThread = 1;

void TrainAll(const Inputs& in, int64_t threads, int64_t layout, float* sums) {
  const int lanes_team = threads >= kLanes ? kLanes : 1;
  const int64_t workers =
      layout == kReplicaPerThread ? std::min<int64_t>(std::max<int64_t>(threads, 1), in.replicas)
                                  : 1;
  const int64_t paired = workers > 1 ? in.replicas / workers * workers : 0;
  auto work = [&in, sums, paired, workers](int64_t w) {
    for (int64_t r = w; r < paired; r += workers) TrainReplica(in, r, 1, sums);
  };
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < workers && paired > 0; ++w)
    pool.push_back(Spawn(static_cast<int>(w), [&work, w] { work(w); }));
  if (paired > 0) work(0);
  for (auto& t : pool) t.join();
  for (int64_t r = paired; r < in.replicas; ++r) TrainReplica(in, r, lanes_team, sums);
}

// Checks the buffers' shapes and copies the state into the results where XLA did not
// alias them (the kernel then updates the results in place); fills `in`.
ffi::Error ReadInputs(ffi::Buffer<ffi::U8>& images, ffi::Buffer<ffi::S32>& labels,
                      ffi::Buffer<ffi::S32>& index, ffi::Buffer<ffi::PRED>& mask,
                      ffi::Buffer<ffi::S32>& count, ffi::RemainingArgs& state,
                      ffi::RemainingRets& new_state, Inputs& in) {
  const auto idims = index.dimensions();
  if (idims.size() != 3) return ffi::Error::InvalidArgument("index must be [R, K, B]");
  in.replicas = idims[0], in.steps = idims[1], in.batch = idims[2];
  const int64_t num_images = images.dimensions()[0];
  in.pixels = num_images ? images.element_count() / num_images : 0;
  const int64_t n = state.size();
  if (n % 6 != 0 || new_state.size() != static_cast<size_t>(n) || n == 0)
    return ffi::Error::InvalidArgument("expected params, mu and nu: 3 x (W, b) per layer");
  if (labels.element_count() != static_cast<size_t>(num_images) ||
      mask.element_count() != index.element_count() ||
      count.element_count() != static_cast<size_t>(in.replicas))
    return ffi::Error::InvalidArgument(
        "labels must match images, mask must match index, count must be [R]");
  for (size_t k = 0; k < index.element_count(); ++k)
    if (index.typed_data()[k] < 0 || index.typed_data()[k] >= num_images)
      return ffi::Error::InvalidArgument("an index is out of range of the images");
  in.state.resize(n);
  for (int64_t k = 0; k < n; ++k) {
    auto src = state.get<ffi::AnyBuffer>(k);
    auto dst = new_state.get<ffi::AnyBuffer>(k);
    if (!src.has_value() || !dst.has_value())
      return ffi::Error::InvalidArgument("bad state buffer");
    if (src->element_type() != ffi::DataType::F32)
      return ffi::Error::InvalidArgument("state arrays must be float32");
    if (src->dimensions().size() < 2 || src->dimensions()[0] != in.replicas)
      return ffi::Error::InvalidArgument("state arrays must have the replica axis of index");
    in.state[k] = (*dst)->typed_data<float>();
    if (in.state[k] != src->typed_data<float>())
      std::memcpy(in.state[k], src->typed_data<float>(), src->size_bytes());
  }
  int64_t width = in.pixels;
  for (int64_t l = 0; l < n / 6; ++l) {
    auto wd = state.get<ffi::AnyBuffer>(2 * l)->dimensions();
    if (wd.size() != 3 || wd[1] != width)
      return ffi::Error::InvalidArgument("layer " + std::to_string(l) + ": kernel shape mismatch");
    in.dims.push_back({wd[1], wd[2]});
    width = wd[2];
  }
  in.images = images.typed_data(), in.labels = labels.typed_data();
  in.index = index.typed_data(), in.mask = mask.typed_data(), in.count = count.typed_data();
  return ffi::Error::Success();
}

ffi::Error Block(ffi::Buffer<ffi::U8> images, ffi::Buffer<ffi::S32> labels,
                 ffi::Buffer<ffi::S32> index, ffi::Buffer<ffi::PRED> mask,
                 ffi::Buffer<ffi::S32> count, ffi::RemainingArgs state,
                 ffi::Result<ffi::Buffer<ffi::F32>> sums, ffi::RemainingRets new_state,
                 float b1, float b2, float c1, float c2, float eps, float lr, int64_t threads,
                 int64_t layout) {
  Inputs in;
  ffi::Error error = ReadInputs(images, labels, index, mask, count, state, new_state, in);
  if (error.failure()) return error;
  if (sums->element_count() != static_cast<size_t>(3 * in.replicas))
    return ffi::Error::InvalidArgument("sums must be [R, 3]");
  in.b1 = b1, in.b2 = b2, in.c1 = c1, in.c2 = c2, in.eps = eps, in.lr = lr;
  TrainAll(in, threads, layout, sums->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DigitsMlpAdamBlock, Block,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .RemainingRets()
                                  .Attr<float>("b1")
                                  .Attr<float>("b2")
                                  .Attr<float>("c1")
                                  .Attr<float>("c2")
                                  .Attr<float>("eps")
                                  .Attr<float>("lr")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("layout"));
