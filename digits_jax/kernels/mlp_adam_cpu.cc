// A block of K training steps of the lab's MLP (Dense+ReLU layers, softmax
// cross-entropy, Keras's Adam) as one XLA FFI call for the CPU.
//
// Why: at the lab's batch sizes (5 to 42) a step is a few hundred thousand
// multiply-adds, and XLA:CPU spends most of a step outside arithmetic: ~30
// separately dispatched thunks, a materialised weight gradient, and three passes
// over every parameter array for Adam. Here each step makes one pass over each
// weight matrix forward, and one backward pass that forms the gradient row by
// row and applies Adam to it while it is in L1. The math is train_state.py's
// (keras_adam, optax's softmax cross-entropy, jax.nn.relu's gradient), checked
// against it by tests/test_cpu_kernel.py; only the summation order differs.
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
#include <string>
#include <thread>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Layer {
  int64_t in, out;
  float *w, *b, *mw, *mb, *vw, *vb;
};

struct Adam {
  float lr_t, c1, c2, eps;  // c1 = 1 - b1, c2 = 1 - b2 (as rounded by the caller).
};

// p += -lr_t * m / (sqrt(v) + eps) after m, v move towards g: keras_adam's update.
// On this loop's sqrt and divide the CPU's divider sets the pace (~0.5 ns/param).
inline void AdamUpdate(float* __restrict p, float* __restrict m, float* __restrict v,
                       const float* __restrict g, int64_t n, const Adam& a) {
  const float lr_t = a.lr_t, c1 = a.c1, c2 = a.c2, eps = a.eps;
  for (int64_t j = 0; j < n; ++j) {
    const float gj = g[j];
    const float mj = m[j] + (gj - m[j]) * c1;
    const float vj = v[j] + (gj * gj - v[j]) * c2;
    m[j] = mj;
    v[j] = vj;
    p[j] = p[j] + (-lr_t * mj) / (std::sqrt(vj) + eps);
  }
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

// [begin, end) of thread t's share of n items; cut points are multiples of `align`.
struct Range { int64_t begin, end; };
Range Part(int64_t n, int t, int threads, int64_t align) {
  auto cut = [&](int k) {
    if (k >= threads) return n;
    return std::min(n, (n * k / threads) / align * align);
  };
  return {cut(t), cut(t + 1)};
}

// 16 floats in a vector register (GCC/Clang vector extension: zmm with AVX-512, two ymm
// with AVX2); loads and stores go through memcpy, so any alignment is fine.
typedef float V16 __attribute__((vector_size(64)));
inline V16 Load(const float* p) { V16 v; std::memcpy(&v, p, sizeof v); return v; }
inline void Store(float* p, V16 v) { std::memcpy(p, &v, sizeof v); }

// A layer input's non-zeros, per example b and lane: idx/val[b * in + rows.begin + k] for
// k < count[b * kLanes + lane] (most pixels, and every inactive ReLU, are zero: skipping
// them leaves every sum unchanged), and per row whether any example is non-zero there.
constexpr int kLanes = 2;
struct Nonzeros {
  std::vector<int32_t> idx, count;
  std::vector<float> val;
  std::vector<uint8_t> any;
  void Resize(int64_t rows, int64_t batch) {
    idx.resize(rows * batch), val.resize(rows * batch), count.resize(batch * kLanes);
    any.resize(rows);
  }
  void Build(const float* act, int64_t in, int64_t batch, Range rows, int lane) {
    std::fill(any.begin() + rows.begin, any.begin() + rows.end, 0);
    for (int64_t b = 0; b < batch; ++b) {  // Branch-free compaction, reading act in order.
      const float* a = act + b * in;
      int32_t* ix = idx.data() + b * in + rows.begin;
      float* vx = val.data() + b * in + rows.begin;
      int32_t k = 0;
      int64_t i = rows.begin;
#ifdef __AVX512F__
      const __m512i step = _mm512_set1_epi32(16);
      __m512i iv = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(i)),
                                    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                      13, 14, 15));
      for (; i + 16 <= rows.end; i += 16, iv = _mm512_add_epi32(iv, step)) {
        const __m512 v = _mm512_loadu_ps(a + i);
        const __mmask16 nz = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_mask_compressstoreu_ps(vx + k, nz, v);
        _mm512_mask_compressstoreu_epi32(ix + k, nz, iv);
        k += __builtin_popcount(nz);
      }
#endif
      for (; i < rows.end; ++i) {
        ix[k] = static_cast<int32_t>(i);
        vx[k] = a[i];
        k += a[i] != 0.0f;
      }
      for (int64_t i = rows.begin; i < rows.end; ++i) any[i] |= a[i] != 0.0f;
      count[b * kLanes + lane] = k;
    }
  }
};

// partial[b, :] = act[b, rows] @ w[rows, :]: one lane's share of a layer's matmul. For
// each example, 64 output columns at a time accumulate in registers over its non-zeros.
__attribute__((noinline)) void ForwardPartial(const Nonzeros& nzs, int64_t batch,
                                              const Layer& l, Range rows, int lane,
                                              float* __restrict partial) {
  const int64_t out = l.out;
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* ix = nzs.idx.data() + b * l.in + rows.begin;
    const float* vx = nzs.val.data() + b * l.in + rows.begin;
    const int32_t n = nzs.count[b * kLanes + lane];
    float* o = partial + b * out;
    int64_t j = 0;
    for (; j + 64 <= out; j += 64) {
      V16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int32_t k = 0; k < n; ++k) {
        const float* w = l.w + ix[k] * out + j;
        const float v = vx[k];
        a0 += v * Load(w), a1 += v * Load(w + 16), a2 += v * Load(w + 32), a3 += v * Load(w + 48);
      }
      Store(o + j, a0), Store(o + j + 16, a1), Store(o + j + 32, a2), Store(o + j + 48, a3);
    }
    for (; j + 16 <= out; j += 16) {
      V16 a0 = {};
      for (int32_t k = 0; k < n; ++k) a0 += vx[k] * Load(l.w + ix[k] * out + j);
      Store(o + j, a0);
    }
    if (j < out) {  // The last out % 16 columns.
      std::fill(o + j, o + out, 0.0f);
      for (int32_t k = 0; k < n; ++k) {
        const float* __restrict w = l.w + ix[k] * out;
        for (int64_t c = j; c < out; ++c) o[c] += vx[k] * w[c];
      }
    }
  }
}

// g[:] = sum over examples b of act[b, i] * delta[b, :] (in example order), in registers.
inline void GradRow(const float* __restrict act, int64_t in, int64_t i,
                    const float* __restrict delta, int64_t batch, int64_t out,
                    float* __restrict g) {
  int64_t j = 0;
  for (; j + 64 <= out; j += 64) {
    V16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t b = 0; b < batch; ++b) {
      const float v = act[b * in + i];
      const float* d = delta + b * out + j;
      a0 += v * Load(d), a1 += v * Load(d + 16), a2 += v * Load(d + 32), a3 += v * Load(d + 48);
    }
    Store(g + j, a0), Store(g + j + 16, a1), Store(g + j + 32, a2), Store(g + j + 48, a3);
  }
  for (; j + 16 <= out; j += 16) {
    V16 a0 = {};
    for (int64_t b = 0; b < batch; ++b) a0 += act[b * in + i] * Load(delta + b * out + j);
    Store(g + j, a0);
  }
  if (j < out) {
    std::fill(g + j, g + out, 0.0f);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = j; c < out; ++c) g[c] += act[b * in + i] * delta[b * out + c];
  }
}

// out[b, cols] = sum of the lanes' partials + bias (then ReLU for hidden layers).
void Combine(const std::vector<float>* partials, int64_t batch, const Layer& l, bool relu,
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

// Rows `rows` of layer l's backward pass: the weight gradient, formed a few rows at a
// time in `gbuf` and applied by Adam while in L1, and (if `dprev`) the gradient with
// respect to the layer's input, from the weights before their update, ReLU-masked.
__attribute__((noinline)) void BackwardAdam(const float* __restrict act, const Nonzeros& nzs,
                                            const float* __restrict delta, int64_t batch,
                                            const Layer& l, const Adam& adam, Range rows,
                                            float* __restrict dprev, std::vector<float>& gbuf) {
  const int64_t out = l.out;
  const int64_t chunk = std::max<int64_t>(1, 2048 / out);
  gbuf.resize(chunk * out);
  for (int64_t i0 = rows.begin; i0 < rows.end; i0 += chunk) {
    const int64_t i1 = std::min(rows.end, i0 + chunk);
    for (int64_t i = i0; i < i1; ++i) {
      const float* __restrict wi = l.w + i * out;
      if (dprev != nullptr) {
        for (int64_t b = 0; b < batch; ++b)  // jax.nn.relu's gradient: 1 where output > 0.
          dprev[b * l.in + i] = act[b * l.in + i] > 0.0f ? Dot(delta + b * out, wi, out) : 0.0f;
      }
      float* __restrict g = gbuf.data() + (i - i0) * out;
      if (nzs.any[i])
        GradRow(act, l.in, i, delta, batch, out, g);
      else
        std::fill(g, g + out, 0.0f);  // No example reaches this row: its gradient is 0.
    }
    const int64_t off = i0 * out, n = (i1 - i0) * out;
    AdamUpdate(l.w + off, l.mw + off, l.vw + off, gbuf.data(), n, adam);
  }
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
  std::vector<std::vector<float>> acts, deltas;  // acts[0] = input, acts[l + 1] = layer l's output.
  std::vector<Nonzeros> nzs;  // Of each layer's input.
  // Per layer, so that no lane overwrites a layer's partials while another reads them.
  std::vector<std::array<std::vector<float>, kLanes>> partials;
  float sums[3] = {0.0f, 0.0f, 0.0f};
};

// Every thread runs this loop for its lanes; lane 0 also computes the loss.
void RunSteps(Shared& sh, Barrier& barrier, int tid, int threads) {
  const int64_t batch = sh.batch, pixels = sh.pixels, classes = sh.classes;
  const int64_t num_layers = static_cast<int64_t>(sh.layers.size());
  const int lane0 = threads == 1 ? 0 : tid, lane1 = threads == 1 ? kLanes : tid + 1;
  std::vector<float> gbuf;
  for (int64_t s = 0; s < sh.steps; ++s) {
    const int32_t* idx = sh.index + s * batch;
    const bool* msk = sh.mask + s * batch;
    float* x = sh.acts[0].data();
    for (int lane = lane0; lane < lane1; ++lane) {  // Each lane scales only its pixels.
      const Range px = Part(pixels, lane, kLanes, 16);
      for (int64_t b = 0; b < batch; ++b) {
        const uint8_t* src = sh.images + static_cast<int64_t>(idx[b]) * pixels;
        for (int64_t i = px.begin; i < px.end; ++i)
          x[b * pixels + i] = static_cast<float>(src[i]) / 255.0f;
      }
      sh.nzs[0].Build(x, pixels, batch, px, lane);
      if (s + 1 < sh.steps) {  // Fetch the next step's images from memory meanwhile.
        for (int64_t b = 0; b < batch; ++b) {
          const uint8_t* next = sh.images + static_cast<int64_t>(idx[batch + b]) * pixels;
          for (int64_t i = px.begin; i < px.end; i += 64) __builtin_prefetch(next + i);
        }
      }
    }
    for (int64_t l = 0; l < num_layers; ++l) {
      const Layer& ly = sh.layers[l];
      for (int lane = lane0; lane < lane1; ++lane)
        ForwardPartial(sh.nzs[l], batch, ly, Part(ly.in, lane, kLanes, 16), lane,
                       sh.partials[l][lane].data());
      barrier.Wait();
      if (l + 1 < num_layers) {  // Each lane completes the columns that are its next rows.
        for (int lane = lane0; lane < lane1; ++lane) {
          const Range cols = Part(ly.out, lane, kLanes, 16);
          Combine(sh.partials[l].data(), batch, ly, true, cols, sh.acts[l + 1].data());
          sh.nzs[l + 1].Build(sh.acts[l + 1].data(), ly.out, batch, cols, lane);
        }
      }
    }
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
    barrier.Wait();
    const float t = static_cast<float>(sh.t0 + s + 1);
    const Adam adam{sh.lr * std::sqrt(1.0f - std::pow(sh.b2, t)) / (1.0f - std::pow(sh.b1, t)),
                    sh.c1, sh.c2, sh.eps};
    for (int64_t l = num_layers - 1; l >= 0; --l) {
      const Layer& ly = sh.layers[l];
      const float* delta = sh.deltas[l + 1].data();
      for (int lane = lane0; lane < lane1; ++lane) {
        if (lane == kLanes - 1) {  // The bias: its gradient is the sum of the deltas.
          gbuf.assign(ly.out, 0.0f);
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t j = 0; j < ly.out; ++j) gbuf[j] += delta[b * ly.out + j];
          AdamUpdate(ly.b, ly.mb, ly.vb, gbuf.data(), ly.out, adam);
        }
        BackwardAdam(sh.acts[l].data(), sh.nzs[l], delta, batch, ly, adam,
                     Part(ly.in, lane, kLanes, 16), l > 0 ? sh.deltas[l].data() : nullptr,
                     gbuf);
      }
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
  sh.partials.resize(num_layers);
  sh.acts[0].resize(sh.batch * sh.pixels);
  for (int64_t l = 0; l < num_layers; ++l) {
    sh.acts[l + 1].resize(sh.batch * sh.layers[l].out);
    sh.deltas[l + 1].resize(sh.batch * sh.layers[l].out);
    sh.nzs[l].Resize(sh.layers[l].in, sh.batch);
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
    helpers.emplace_back([&sh, &barrier, tid, team] { RunSteps(sh, barrier, tid, team); });
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
  for (int64_t w = 1; w < workers && paired > 0; ++w) pool.emplace_back(work, w);
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
