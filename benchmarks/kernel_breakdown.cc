// Where a step of the fused CPU kernel goes, beside what this CPU allows (issue 23).
//
// Includes the kernel's source with its phase marks switched on, trains one replica on
// real images (raw files written by benchmark.py --sections=breakdown) and prints, per
// step and per thread: the kernel's phases (input, forward, loss, backward, Adam, waiting
// at barriers) and three floors measured here with the kernel's own compiler flags:
//   adam      the kernel's exact update (AdamUpdate) over contiguous arrays of each
//             thread's share of the parameters, all threads at once;
//   adam_mem  the same loop without its square root and divide: the memory traffic alone;
//   matmul    the multiply-adds a step needs with zero inputs skipped (counted on the run's
//             batches) at this core's measured peak rate of fused multiply-adds.
// Output: one JSON line per run (benchmark.py prints the table).
//
//   g++ -O3 -march=native -std=c++17 -fno-math-errno -I. -I$(python -c 'import jax;
//     print(jax.ffi.include_dir())') benchmarks/kernel_breakdown.cc -o /tmp/kb -lpthread
//   /tmp/kb IMAGES.u8 LABELS.s32 784,150,10 BATCH STEPS THREADS

#include <x86intrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <vector>

enum class Phase { kInput, kForward, kLoss, kBackward, kAdam, kWait, kCount };
constexpr int kPhases = static_cast<int>(Phase::kCount);
const char* const kPhaseNames[kPhases] = {"input", "forward", "loss", "backward", "adam",
                                          "wait"};

// Each thread charges the cycles since its last mark to the phase it was in; a thread's
// totals join the global ones when it ends (the kernel's helper threads end every call).
std::mutex totals_mutex;
double totals[kPhases];
struct PhaseClock {
  int current = -1;
  uint64_t last = 0;
  uint64_t cycles[kPhases] = {};
  void Flush() {
    std::lock_guard<std::mutex> lock(totals_mutex);
    for (int k = 0; k < kPhases; ++k) totals[k] += cycles[k], cycles[k] = 0;
    current = -1;
  }
  ~PhaseClock() { Flush(); }
};
thread_local PhaseClock phase_clock;
void MarkPhase(Phase phase) {
  const uint64_t now = __rdtsc();
  if (phase_clock.current >= 0) phase_clock.cycles[phase_clock.current] += now - phase_clock.last;
  phase_clock.current = static_cast<int>(phase), phase_clock.last = now;
}
#define DIGITS_JAX_PHASES MarkPhase
#include "digits_jax/kernels/mlp_adam_cpu.cc"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

template <typename T>
std::vector<T> ReadFile(const char* path) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) std::perror(path), std::exit(2);
  std::vector<T> out;
  T buf[4096];
  for (size_t n; (n = std::fread(buf, sizeof(T), 4096, f)) > 0;) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

// n zeros, 64-byte aligned.
struct AlignedFloats {
  std::vector<float> storage;
  float* start;
  int64_t n;
  explicit AlignedFloats(int64_t size) : storage(size + 16, 0.0f), n(size) {
    start = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64 / 4;
  }
  float* data() { return start; }
  const float* data() const { return start; }
  float* begin() { return start; }
  float* end() { return start + n; }
};

// Multiply-adds a step needs with zero inputs skipped, on `steps` batches of the run:
// forward (non-zero inputs x outputs; the weight gradient needs as many) and input
// gradients (active hidden units x outputs), from a plain forward pass.
struct Counts { double forward = 0, gradient = 0, input_grad = 0; };
Counts CountMultiplyAdds(const std::vector<uint8_t>& images, int64_t pixels,
                         const std::vector<std::array<int64_t, 2>>& dims,
                         const std::vector<AlignedFloats>& params,
                         const std::vector<int32_t>& index, int64_t batch, int64_t steps) {
  Counts c;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<std::vector<float>> act(batch);
    for (int64_t b = 0; b < batch; ++b) {
      const uint8_t* img = images.data() + static_cast<int64_t>(index[s * batch + b]) * pixels;
      act[b].assign(img, img + pixels);
    }
    for (size_t l = 0; l < dims.size(); ++l) {
      const int64_t in = dims[l][0], out = dims[l][1];
      const float* w = params[2 * l].data();
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> next(out, 0.0f);
        for (int64_t i = 0; i < in; ++i) {
          if (act[b][i] == 0.0f) continue;
          c.forward += out, c.gradient += out;
          if (l > 0) c.input_grad += out;
          for (int64_t j = 0; j < out; ++j) next[j] += act[b][i] * w[i * out + j];
        }
        for (auto& x : next) x = std::max(x, 0.0f);
        act[b] = next;
      }
    }
  }
  c.forward /= steps, c.gradient /= steps, c.input_grad /= steps;
  return c;
}

// This core's peak rate of fused multiply-adds (per ns): independent chains in registers.
double PeakFmaPerNs() {
  V16 acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = V16{} + 1e-3f * k;
  const V16 x = V16{} + 0.999f, y = V16{} + 1e-6f;
  const int64_t iters = 20'000'000;
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < 12; ++k) acc[k] = acc[k] * x + y;
  const double s = Seconds(t0);
  float sink = 0;
  for (int k = 0; k < 12; ++k) sink += acc[k][0];
  if (sink == 12345.0f) std::puts("");
  return iters * 12.0 * 16 / (s * 1e9);
}

// us per call of `fn(lane)` on `threads` threads at once (median of 7 rounds).
template <typename Fn>
double TimedOnThreads(int threads, int reps, Fn fn) {
  std::vector<double> rounds;
  for (int round = 0; round < 7; ++round) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
      pool.emplace_back([&fn, t, reps] { for (int r = 0; r < reps; ++r) fn(t); });
    for (int r = 0; r < reps; ++r) fn(0);
    for (auto& t : pool) t.join();
    rounds.push_back(Seconds(t0) * 1e6 / reps);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[3];
}

// The update over each thread's share of n parameters in contiguous arrays; with
// `exact` false, the divide and square root are left out (the memory traffic alone).
double AdamFloor(int64_t n, int threads, bool exact) {
  const int64_t share = (n + threads - 1) / threads;
  std::vector<Floats> arrays(4 * threads, Floats(share, 1e-3f));
  const Adam adam{1e-3f, 0.1f, 0.001f, 1e-7f};
  return TimedOnThreads(threads, 400, [&](int t) {
    float *p = arrays[4 * t].data(), *m = arrays[4 * t + 1].data(),
          *v = arrays[4 * t + 2].data(), *g = arrays[4 * t + 3].data();
    if (exact) {
      AdamUpdate(p, m, v, g, share, adam);
    } else {
      for (int64_t j = 0; j < share; ++j) {
        const float mj = m[j] + (g[j] - m[j]) * adam.c1;
        const float vj = v[j] + (g[j] * g[j] - v[j]) * adam.c2;
        m[j] = mj, v[j] = vj, p[j] = p[j] + (-adam.lr_t * mj) * (vj + adam.eps);
      }
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s IMAGES.u8 LABELS.s32 784,150,10 BATCH STEPS THREADS\n", argv[0]);
    return 2;
  }
  // Denormals flushed to zero, as on XLA's CPU threads (the kernel runs on one of them,
  // and its helper threads inherit the caller's floating-point environment).
  _mm_setcsr(_mm_getcsr() | 0x8040);
  const auto images = ReadFile<uint8_t>(argv[1]);
  const auto labels = ReadFile<int32_t>(argv[2]);
  std::vector<int64_t> widths;
  for (const char* p = argv[3]; *p;) widths.push_back(std::strtol(p, const_cast<char**>(&p), 10)), p += *p == ',';
  const int64_t batch = std::atol(argv[4]), steps = std::atol(argv[5]);
  const int threads = std::atoi(argv[6]);
  const int64_t pixels = widths[0], num_images = static_cast<int64_t>(labels.size());
  if (static_cast<int64_t>(images.size()) != num_images * pixels)
    return std::fprintf(stderr, "images and labels disagree\n"), 2;

  // Glorot-uniform weights, zero biases and moments (Flax's Dense initialisers).
  std::mt19937 gen(0);
  std::vector<std::array<int64_t, 2>> dims;
  // params, then mu, then nu: (W, b) per layer, each 64-byte aligned as XLA's buffers are.
  std::vector<AlignedFloats> state;
  for (size_t l = 0; l + 1 < widths.size(); ++l) dims.push_back({widths[l], widths[l + 1]});
  for (int part = 0; part < 3; ++part)
    for (const auto& d : dims) {
      AlignedFloats w(d[0] * d[1]);
      const float limit = std::sqrt(6.0f / (d[0] + d[1]));
      std::uniform_real_distribution<float> uniform(-limit, limit);
      if (part == 0) for (auto& x : w) x = uniform(gen);
      state.push_back(std::move(w));
      state.emplace_back(d[1]);
    }
  // KB_DUMP: train exactly `steps` steps (no warm-up) and write the final state there.
  const char* dump = std::getenv("KB_DUMP");
  const int64_t block = dump ? steps : 512, blocks = (steps + block - 1) / block;
  std::vector<int32_t> index(blocks * block * batch);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(num_images - 1));
  for (auto& i : index) i = pick(gen);
  std::vector<uint8_t> mask(block * batch, 1);

  Inputs in;
  in.images = images.data(), in.labels = labels.data();
  in.mask = reinterpret_cast<const bool*>(mask.data());
  in.replicas = 1, in.steps = block, in.batch = batch, in.pixels = pixels, in.dims = dims;
  for (auto& a : state) in.state.push_back(a.data());
  in.b1 = 0.9f, in.b2 = 0.999f, in.c1 = 1 - 0.9f, in.c2 = 1 - 0.999f, in.eps = 1e-7f, in.lr = 1e-3f;
  float sums[3];
  int32_t count = 0;
  in.count = &count;
  in.index = index.data();
  if (!dump) TrainAll(in, threads, 0, sums);  // Warm-up block, not timed.
  phase_clock.Flush();
  std::fill(totals, totals + kPhases, 0.0);
  const uint64_t c0 = __rdtsc();
  const auto t0 = Clock::now();
  for (int64_t k = 0; k < blocks; ++k) {
    in.index = index.data() + k * block * batch, count = static_cast<int32_t>(block * (k + 1));
    TrainAll(in, threads, 0, sums);
    phase_clock.Flush();
  }
  if (dump) {
    FILE* f = std::fopen(dump, "wb");
    for (const auto& a : state) std::fwrite(a.data(), sizeof(float), a.n, f);
    std::fclose(f);
  }
  const double seconds = Seconds(t0), cycles_per_us = (__rdtsc() - c0) / (seconds * 1e6);
  const double total_steps = static_cast<double>(blocks * block);

  int64_t num_params = 0;
  for (const auto& d : dims) num_params += d[0] * d[1] + d[1];
  const Counts counts = CountMultiplyAdds(images, pixels, dims, state, index, batch,
                                          std::min<int64_t>(256, blocks * block));
  const double fma_per_ns = PeakFmaPerNs();
  const double per_thread = 1e-3 / (fma_per_ns * threads);  // us per multiply-add.
  std::printf("{\"layers\": \"%s\", \"batch\": %ld, \"threads\": %d, \"steps\": %.0f, "
              "\"us_per_step\": %.2f", argv[3], batch, threads, total_steps,
              seconds * 1e6 / total_steps);
  for (int k = 0; k < kPhases; ++k)
    std::printf(", \"%s\": %.2f", kPhaseNames[k],
                totals[k] / cycles_per_us / total_steps / threads);
  std::printf(", \"floor_adam\": %.2f, \"floor_adam_mem\": %.2f, \"floor_forward\": %.2f, "
              "\"floor_backward\": %.2f, \"params\": %ld, \"fma_per_ns\": %.2f, "
              "\"forward_madds\": %.0f, \"backward_madds\": %.0f}\n",
              AdamFloor(num_params, threads, true), AdamFloor(num_params, threads, false),
              counts.forward * per_thread, (counts.gradient + counts.input_grad) * per_thread,
              num_params, fma_per_ns, counts.forward, counts.gradient + counts.input_grad);
  return 0;
}
