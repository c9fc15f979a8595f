/// The machine's floating-point ceiling as this build's vector code can reach it: the yardstick
/// for kernels that do not go through BLAS (depthwise convolution, normalisation). It lives in
/// this target so it is compiled with the same instruction-set flags as the kernels.
public enum PeakThroughput {
    /// Runs ten independent 8-wide FMA chains per thread for `iterations` steps on every thread
    /// of `pool`, and returns the floating-point operations performed (2 per lane per FMA).
    /// Ten chains hide the FMA latency (4 cycles) behind two FMA ports.
    @inline(never)
    public static func fmaChains(iterations: Int, pool: ComputePool, sink: UnsafeMutablePointer<Float>) -> Double {
        pool.forEachRange(pool.threads) { range in
            for thread in range {
                var a0 = SIMD8<Float>(repeating: 1), a1 = SIMD8<Float>(repeating: 2), a2 = SIMD8<Float>(repeating: 3)
                var a3 = SIMD8<Float>(repeating: 4), a4 = SIMD8<Float>(repeating: 5), a5 = SIMD8<Float>(repeating: 6)
                var a6 = SIMD8<Float>(repeating: 7), a7 = SIMD8<Float>(repeating: 8), a8 = SIMD8<Float>(repeating: 9)
                var a9 = SIMD8<Float>(repeating: 10)
                // x·a + y with |x| < 1 keeps every chain finite and out of the denormal range.
                let x = SIMD8<Float>(repeating: 0.5), y = SIMD8<Float>(repeating: 0.25)
                for _ in 0..<iterations {
                    a0 = y.addingProduct(a0, x); a1 = y.addingProduct(a1, x); a2 = y.addingProduct(a2, x)
                    a3 = y.addingProduct(a3, x); a4 = y.addingProduct(a4, x); a5 = y.addingProduct(a5, x)
                    a6 = y.addingProduct(a6, x); a7 = y.addingProduct(a7, x); a8 = y.addingProduct(a8, x)
                    a9 = y.addingProduct(a9, x)
                }
                let total = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9
                sink[thread] = total.sum()
            }
        }
        return Double(pool.threads) * Double(iterations) * 10 * 8 * 2
    }
}
