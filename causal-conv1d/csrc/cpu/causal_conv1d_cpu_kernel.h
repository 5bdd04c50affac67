// Causal conv1d CPU core: the forward and backward loops over ranges of (batch, channel) rows.
//
// Included by causal_conv1d_cpu.cpp once per instruction set, right after cpu_simd.h, inside that
// instruction set's namespace and target region (see the inclusion contract of cpu_simd.h, which
// applies here too: no include guard, no includes, no standard-library templates, internal
// linkage only). It uses the POD `ConvParams` and `ConvDType`, defined before.
//
// Vectorised over time: one native vector `vn` holds kW consecutive time steps of one row. With
// off = W-1 (causal) or 0 (anti-causal, taps reversed by the caller) and x = 0 outside [0, L),
//   pre[t] = bias + sum_j w[j] * x[t - off + j],          out[t] = silu(pre[t]) or pre[t],
// so output vector t0 .. t0+kW-1 needs the W shifted input vectors x[t0 - off + j ..], read
// straight from the row (unaligned, converted to float32) except at the two ends of the row,
// where they come from a small zero-padded copy. All arithmetic is float32.
//
// Backward, per row (batch element b, channel c):
//   dpre[t] = dout[t] * silu'(pre[t]) (or dout[t]),  dx[s] = sum_j w[j] * dpre[s + off - j],
//   dw_b[j] = sum_t dpre[t] * x[t - off + j],         db_b = sum_t dpre[t].
// The first pass (recompute pre, dpre, the dw/db sums) stores dpre in a zero-padded per-thread
// buffer that the second pass (dx) reads with shifted vector loads. A row's dw/db are summed
// lane-wise in vectors, then over the lanes in lane order, into a per-row slot; the caller adds
// the slots over the batch in batch order. A fixed order for a given instruction set, so the
// results do not depend on the number of threads (they may differ in the last bits between
// instruction sets).

// The W shifted input vectors of the output vector at t0: xs[j] = x[t0 - off + j .. + kW], with
// zeros outside the row [0, L).
template <typename T, int W>
CPU_SIMD_INLINE void load_taps(const T* x, int64_t L, int64_t t0, int64_t off, vn* xs) {
  const int64_t first = t0 - off;
  if (first >= 0 && first + kW + W - 1 <= L) {
    for (int j = 0; j < W; ++j) xs[j] = load_n(x + first + j);
    return;
  }
  float buf[kW + W - 1];
  for (int i = 0; i < kW + W - 1; ++i) {
    const int64_t t = first + i;
    buf[i] = t >= 0 && t < L ? static_cast<float>(x[t]) : 0.f;
  }
  for (int j = 0; j < W; ++j) xs[j] = load_n(buf + j);
}

template <int W>
CPU_SIMD_INLINE vn conv_vec(const vn* w, vn bias, const vn* xs) {
  vn acc = bias;
  for (int j = 0; j < W; ++j) acc += w[j] * xs[j];
  return acc;
}

template <typename T>
CPU_SIMD_INLINE void store_row_vec(T* dst, vn v, int64_t remaining) {
  if (remaining >= kW)
    store_n(dst, v);
  else
    store_first_n(dst, v, static_cast<int>(remaining));
}

// Rows [begin, end) of the forward (row = batch index * dim + channel).
template <typename T, int W, bool SILU>
void fwd_rows_t(const ConvParams& p, int64_t begin, int64_t end) {
  const int64_t L = p.len, off = p.reverse ? 0 : W - 1;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t c = row % p.dim;
    const T* x = static_cast<const T*>(p.x) + row * L;
    T* out = static_cast<T*>(p.out) + row * L;
    vn w[W];
    for (int j = 0; j < W; ++j) w[j] = splat_n(p.w[c * W + j]);
    const vn bias = splat_n(p.bias[c]);
    for (int64_t t0 = 0; t0 < L; t0 += kW) {
      vn xs[W];
      load_taps<T, W>(x, L, t0, off, xs);
      vn v = conv_vec<W>(w, bias, xs);
      if (SILU) v = silu_n(v);
      store_row_vec(out + t0, v, L - t0);
    }
  }
}

// Rows [begin, end) of the backward: dx, and the row's sums sum_t dpre[t] x[t - off + j] (taps
// j < W) and sum_t dpre[t] (at j = W) in part[row * (W + 1) + j], which the caller adds up over the
// batch. `dpad`: a zeroed float buffer of at least L + 2 * (W - 1) + kW floats, this thread's own.
template <typename T, int W, bool SILU>
void bwd_rows_t(const ConvParams& p, int64_t begin, int64_t end, float* dpad) {
  const int64_t L = p.len, off = p.reverse ? 0 : W - 1;
  float* dpre = dpad + (W - 1);  // dpad[0, W-1) stays zero: dpre[-1], dpre[-2], ...
  for (int64_t row = begin; row < end; ++row) {
    const int64_t c = row % p.dim;
    vn w[W];
    for (int j = 0; j < W; ++j) w[j] = splat_n(p.w[c * W + j]);
    const vn bias = splat_n(p.bias[c]);
    vn dw[W];
    for (int j = 0; j < W; ++j) dw[j] = vn{};
    vn db = vn{};
    const T* x = static_cast<const T*>(p.x) + row * L;
    const T* dout = static_cast<const T*>(p.dout) + row * L;
    T* dx = static_cast<T*>(p.dx) + row * L;
    // Pass 1: dpre, and the dw / db sums.
    for (int64_t t0 = 0; t0 < L; t0 += kW) {
      const int64_t remaining = L - t0;
      vn xs[W];
      load_taps<T, W>(x, L, t0, off, xs);
      vn d = remaining >= kW ? load_n(dout + t0) : load_first_n(dout + t0, static_cast<int>(remaining));
      if (SILU) d = d * silu_grad_n(conv_vec<W>(w, bias, xs));
      if (remaining < kW) d = keep_first_n(d, static_cast<int>(remaining));  // zeros past the row
      store_n(dpre + t0, d);
      db += d;
      for (int j = 0; j < W; ++j) dw[j] += d * xs[j];
    }
    for (int i = 0; i < W - 1; ++i) dpre[L + i] = 0.f;  // dpre[L], dpre[L+1], ... read as zero
    // Pass 2: dx.
    for (int64_t s0 = 0; s0 < L; s0 += kW) {
      vn acc = w[0] * load_n(dpre + s0 + off);
      for (int j = 1; j < W; ++j) acc += w[j] * load_n(dpre + s0 + off - j);
      store_row_vec(dx + s0, acc, L - s0);
    }
    float* part = p.part + row * (W + 1);
    for (int j = 0; j < W; ++j) part[j] = lane_sum_n(dw[j]);
    part[W] = lane_sum_n(db);
  }
}

template <typename T, int W>
void fwd_rows_w(const ConvParams& p, int64_t begin, int64_t end) {
  if (p.silu)
    fwd_rows_t<T, W, true>(p, begin, end);
  else
    fwd_rows_t<T, W, false>(p, begin, end);
}

template <typename T, int W>
void bwd_rows_w(const ConvParams& p, int64_t begin, int64_t end, float* dpad) {
  if (p.silu)
    bwd_rows_t<T, W, true>(p, begin, end, dpad);
  else
    bwd_rows_t<T, W, false>(p, begin, end, dpad);
}

template <typename T>
void fwd_rows_dt(const ConvParams& p, int64_t begin, int64_t end) {
  if (p.width == 2) return fwd_rows_w<T, 2>(p, begin, end);
  if (p.width == 3) return fwd_rows_w<T, 3>(p, begin, end);
  return fwd_rows_w<T, 4>(p, begin, end);
}

template <typename T>
void bwd_rows_dt(const ConvParams& p, int64_t begin, int64_t end, float* dpad) {
  if (p.width == 2) return bwd_rows_w<T, 2>(p, begin, end, dpad);
  if (p.width == 3) return bwd_rows_w<T, 3>(p, begin, end, dpad);
  return bwd_rows_w<T, 4>(p, begin, end, dpad);
}

// Entry points (non-template).
void fwd_rows(const ConvParams& p, int64_t begin, int64_t end) {
  switch (p.dtype) {
    case ConvDType::kFloat: return fwd_rows_dt<float>(p, begin, end);
    case ConvDType::kHalf: return fwd_rows_dt<c10::Half>(p, begin, end);
    case ConvDType::kBFloat16: return fwd_rows_dt<c10::BFloat16>(p, begin, end);
  }
}

void bwd_rows(const ConvParams& p, int64_t begin, int64_t end, float* dpad) {
  switch (p.dtype) {
    case ConvDType::kFloat: return bwd_rows_dt<float>(p, begin, end, dpad);
    case ConvDType::kHalf: return bwd_rows_dt<c10::Half>(p, begin, end, dpad);
    case ConvDType::kBFloat16: return bwd_rows_dt<c10::BFloat16>(p, begin, end, dpad);
  }
}
