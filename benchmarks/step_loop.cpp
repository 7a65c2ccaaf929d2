// The achievable rate of a Generalized SignSGD step on one core: minimal single-thread loops
// with the step's traffic (read x g m v, write x m v; float32), without adaptopt.
//
//   g++ -O3 -mavx2 -mfma -fno-math-errno benchmarks/step_loop.cpp -o /tmp/step_loop && /tmp/step_loop
//   (add -fno-tree-vectorize for the scalar loop; an argument sets the element count)
//
// Prints the medians of 15 rounds of: the step's math with its traffic, the same traffic
// without the math, and the math alone on an in-cache block. When the first is close to the
// second, the step is memory-bound (benchmarks/RESULTS.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

struct Coefficients {
  float beta1 = 0.9f, one_minus_beta1 = 0.1f, beta2 = 0.999f, one_minus_beta2 = 0.001f;
  float inv_sqrt_bc2 = 1.0f, eps = 1e-8f, step = -1e-3f;
};

__attribute__((noinline)) void step(float* __restrict x, const float* __restrict g,
                                    float* __restrict m, float* __restrict v, long n,
                                    Coefficients k) {
  for (long j = 0; j < n; ++j) {
    const float m_t = k.beta1 * m[j] + k.one_minus_beta1 * g[j];
    const float v_t = k.beta2 * v[j] + k.one_minus_beta2 * g[j] * g[j];
    const float denom = std::sqrt(v_t) * k.inv_sqrt_bc2 + k.eps;
    m[j] = m_t, v[j] = v_t;
    x[j] += k.step * (m_t / (denom + float(denom == 0.0f)));
  }
}

__attribute__((noinline)) void traffic(float* __restrict x, const float* __restrict g,
                                       float* __restrict m, float* __restrict v, long n) {
  for (long j = 0; j < n; ++j) {
    const float a = x[j], b = g[j], c = m[j], e = v[j];
    v[j] = e + b, m[j] = c + b, x[j] = a + c;
  }
}

__attribute__((noinline)) void math_in_cache(float* __restrict block, long n, Coefficients k) {
  constexpr long BLOCK = 4096;  // 16 KiB
  for (long r = 0; r < n / BLOCK; ++r)
    for (long j = 0; j < BLOCK; ++j) {
      const float d = block[j];
      const float v_t = k.beta2 * d + k.one_minus_beta2 * d * d;
      const float denom = std::sqrt(v_t) * k.inv_sqrt_bc2 + k.eps;
      block[j] = d + k.step * ((k.beta1 * d + k.one_minus_beta1 * d) /
                               (denom + float(denom == 0.0f)));
    }
}

template <class F>
double median_seconds(std::vector<double>& times, F run) {
  const auto start = std::chrono::steady_clock::now();
  run();
  times.push_back(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  return sorted[sorted.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : (1L << 23);
  if (n < 4096) {
    std::fprintf(stderr, "at least 4096 elements\n");
    return 1;
  }
  std::vector<float> x(n, 1.0f), g(n, 0.5f), m(n, 0.0f), v(n, 0.0f), block(4096, 0.3f);
  const Coefficients k;
  std::vector<double> t_step, t_traffic, t_math;
  double s = 0, t = 0, c = 0;
  for (int r = 0; r < 15; ++r) {
    s = median_seconds(t_step, [&] { step(x.data(), g.data(), m.data(), v.data(), n, k); });
    t = median_seconds(t_traffic, [&] { traffic(x.data(), g.data(), m.data(), v.data(), n); });
    c = median_seconds(t_math, [&] { math_in_cache(block.data(), n, k); });
  }
  std::printf("%ld elements: step %.2f ms (%.1f GB/s of 28 B/element), traffic alone %.2f ms "
              "(%.1f GB/s), step / traffic %.2f; math in cache %.2f ns/element\n",
              n, s * 1e3, 28.0 * n / s / 1e9, t * 1e3, 28.0 * n / t / 1e9, s / t,
              c / n * 1e9);
}
