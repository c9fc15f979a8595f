import CKernels
import Foundation
import Testing
@testable import KaleidoTensor

/// `kaleido_small_gemm` and `kaleido_small_transpose` (attention's per-window products): the
/// vector tiles (AVX-512 and AVX2, as the CPU has them) against a Float64 reference, and bit for
/// bit against the plain loops, on shapes with and without a column tail, a transposed A, and
/// accumulation.
@Suite struct SmallGEMMTests {
    struct Case: CustomStringConvertible, Sendable {
        let m, n, k: Int
        let transposedA, accumulate: Bool
        var description: String { "\(m)×\(n)×\(k)\(transposedA ? " Aᵀ" : "")\(accumulate ? " +=" : "")" }
    }

    static let cases: [Case] = [(16, 16, 16), (49, 49, 32), (49, 32, 49), (5, 13, 7), (1, 1, 1), (3, 33, 2), (9, 24, 5),
                                (196, 196, 32), (13, 70, 3)]
        .flatMap { m, n, k in [false, true].flatMap { t in [false, true].map { Case(m: m, n: n, k: k, transposedA: t, accumulate: $0) } } }

    func run(_ c: Case, vectorized: Int32) -> [Float] {
        // A stored with a wider row than it uses, B and C too, so strides are exercised.
        let aRows = c.transposedA ? c.k : c.m, aColumns = c.transposedA ? c.m : c.k
        let a = randomValues(aRows * (aColumns + 3), seed: 7)
        let b = randomValues(c.k * (c.n + 5), seed: 8)
        var out = randomValues(c.m * (c.n + 2), seed: 9)
        let aRow = c.transposedA ? 1 : aColumns + 3, aStep = c.transposedA ? aColumns + 3 : 1
        kaleido_small_gemm(vectorized, Int32(c.m), Int32(c.n), Int32(c.k), 0.25, a, aRow, aStep, b, c.n + 5, &out, c.n + 2, c.accumulate ? 1 : 0)
        return out
    }

    @Test(arguments: cases)
    func productMatchesFloat64AndThePlainLoops(_ c: Case) throws {
        let vector = run(c, vectorized: kaleido_small_gemm_vectorized())
        let plain = run(c, vectorized: 0)
        #expect(vector == plain, "the vector tiles must sum in the plain loops' order")
        // On an AVX-512 CPU the AVX2 tiles too (1), which such a CPU also runs.
        for narrower in Int32(1)..<max(1, kaleido_small_gemm_vectorized()) {
            #expect(run(c, vectorized: narrower) == plain, "the tiles of level \(narrower)")
        }

        let aRows = c.transposedA ? c.k : c.m, aColumns = c.transposedA ? c.m : c.k
        let a = randomValues(aRows * (aColumns + 3), seed: 7), b = randomValues(c.k * (c.n + 5), seed: 8)
        let before = randomValues(c.m * (c.n + 2), seed: 9)
        for r in 0..<c.m {
            for j in 0..<(c.n + 2) {
                let index = r * (c.n + 2) + j
                guard j < c.n else {
                    #expect(vector[index] == before[index], "column \(j) beyond n must be untouched")
                    continue
                }
                var sum = 0.0
                for i in 0..<c.k {
                    let aValue = c.transposedA ? a[i * (aColumns + 3) + r] : a[r * (aColumns + 3) + i]
                    sum += Double(aValue) * Double(b[i * (c.n + 5) + j])
                }
                let expected = (c.accumulate ? Double(before[index]) : 0) + 0.25 * sum
                #expect(abs(Double(vector[index]) - expected) <= 1e-5 * max(1, abs(expected)), "C[\(r), \(j)]")
            }
        }
    }

    @Test(arguments: [(16, 16), (49, 32), (5, 13), (9, 8), (8, 17), (1, 1)])
    func transposeMovesEveryElement(rows: Int, columns: Int) {
        let stride = columns + 4
        let m = randomValues(rows * stride, seed: 3)
        for vectorized in [kaleido_small_gemm_vectorized(), 0] {
            var out = [Float](repeating: .nan, count: rows * columns)
            kaleido_small_transpose(vectorized, Int32(rows), Int32(columns), m, stride, &out)
            for r in 0..<rows { for c in 0..<columns { #expect(out[c * rows + r] == m[r * stride + c]) } }
        }
    }
}
