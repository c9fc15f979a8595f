/// exp and erf as branch-free polynomials, for the kernels whose time went to libm's scalar
/// `expf` and `erff` (softmax, attention, GELU). Written on scalars with selects instead of
/// branches and no integer conversion, so a loop over them is vectorised by LLVM (8 lanes with
/// AVX2); Swift's generic SIMD helpers (`pointwiseMin`, `SIMD8<Int32>(_:)`) were not inlined
/// and ran lane by lane. Accuracy is checked against Float64 libm in `VectorMathTests`
/// (exp: relative error < 2e-7 over [−87, 88]; erf: relative error < 1e-6, absolute < 5e-7).
public enum VectorMath {
    /// e^x. x = n·ln2 + r with n = round(x / ln2) and |r| ≤ ln2/2 (ln2 split into a part exact
    /// in float and a remainder, as in Cephes); e^r is a degree-6 polynomial (Cephes `expf`
    /// coefficients), and 2^n is built in the exponent bits. n is rounded by adding and
    /// subtracting 1.5·2²³, which also leaves n in the low mantissa bits of the sum. Below
    /// −87.3 (where e^x leaves the normal floats) the result is 0; above 88.7 it saturates at
    /// e^88.7 rather than +∞.
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        let lowest: Float = -87.33654, highest: Float = 88.72283
        let clamped = x < lowest ? lowest : (x > highest ? highest : x)
        let shifter: Float = 12582912 // 1.5 · 2²³
        let shifted = clamped * 1.44269504088896341 + shifter
        let n = shifted - shifter
        let r = clamped - n * 0.693359375 + n * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let er = p * (r * r) + r + 1
        // shifted's bits are 0x4B400000 + n; the exponent field of 2^n is n + 127.
        let twoToN = Float(bitPattern: (shifted.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
        return x < lowest ? 0 : er * twoToN
    }

    /// erf(x) as x·P(x²)/Q(x²), a rational fit on [−4, 4] (the coefficients of Eigen's and
    /// XLA's `erf` for float); outside it erf is ±1 to float precision.
    @inline(__always)
    public static func erf(_ x: Float) -> Float {
        let c = x < -4 ? -4 : (x > 4 ? 4 : x)
        let x2 = c * c
        var p: Float = -2.72614225801306e-10
        p = p * x2 + 2.77068142495902e-08
        p = p * x2 - 2.10102402082508e-06
        p = p * x2 - 5.69250639462346e-05
        p = p * x2 - 7.34990630326855e-04
        p = p * x2 - 2.95459980854025e-03
        p = p * x2 - 1.60960333262415e-02
        var q: Float = -1.45660718464996e-05
        q = q * x2 - 2.13374055278905e-04
        q = q * x2 - 1.68282697438203e-03
        q = q * x2 - 7.37332916720468e-03
        q = q * x2 - 1.42647390514189e-02
        return c * p / q
    }
}
