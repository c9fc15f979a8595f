import CKernels
import Foundation
import Testing
@testable import KaleidoTensor

/// `kaleido_packed_gemm` (linear layers with a short inner dimension): the vector tiles bit for
/// bit against the plain loops and against Float64 (AVX2 tiles, and AVX-512 ones where the CPU
/// has it), with row tiles of every height, column tails, a bias, accumulation, B as a weight's
/// transpose and as itself; and `BLAS.packedProduct` on two threads against one.
@Suite struct PackedGEMMTests {
    struct Case: CustomStringConvertible, Sendable {
        let m, n, k: Int
        let transposedB, bias, accumulate: Bool
        var description: String { "\(m)×\(n)×\(k)\(transposedB ? " Wᵀ" : " W")\(bias ? " +b" : "")\(accumulate ? " +=" : "")" }
    }

    // Tile heights 1–8 and several 48-row blocks; widths with no tail, a tail under 8 and over 8,
    // an odd and an even number of 16-column panels.
    static let cases: [Case] = [(1, 16, 5), (7, 33, 48), (53, 144, 48), (100, 9, 3), (6, 24, 96), (101, 48, 192),
                                (3, 40, 17), (50, 64, 20)]
        .flatMap { m, n, k in [(true, true, false), (false, false, true), (true, false, false), (false, true, true)]
            .map { Case(m: m, n: n, k: k, transposedB: $0.0, bias: $0.1, accumulate: $0.2) } }

    struct Operands {
        let a, b, bias, before: [Float]
        let lda, ldc, bRow, bColumn: Int
    }

    func operands(_ c: Case) -> Operands {
        // A and C stored with wider rows than they use, so the strides are exercised.
        let lda = c.k + 3, ldc = c.n + 2
        return Operands(a: randomValues(c.m * lda, seed: 11), b: randomValues(c.k * c.n, seed: 12), bias: randomValues(c.n, seed: 13),
                        before: randomValues(c.m * ldc, seed: 14), lda: lda, ldc: ldc,
                        bRow: c.transposedB ? 1 : c.n, bColumn: c.transposedB ? c.k : 1)
    }

    func run(_ c: Case, _ o: Operands, vectorized: Int32, rows: [Range<Int>]) -> [Float] {
        var packed = [Float](repeating: .nan, count: kaleido_packed_b_floats(Int32(c.k), Int32(c.n)))
        kaleido_pack_b(Int32(c.k), Int32(c.n), o.b, o.bRow, o.bColumn, &packed)
        var out = o.before
        o.bias.withUnsafeBufferPointer { bias in
            for range in rows {
                kaleido_packed_gemm(vectorized, Int32(range.lowerBound), Int32(range.upperBound), Int32(c.n), Int32(c.k), o.a, o.lda,
                                    packed, c.bias ? bias.baseAddress : nil, &out, o.ldc, c.accumulate ? 1 : 0)
            }
        }
        return out
    }

    /// Every tile width this CPU runs (AVX2, and AVX-512 where present), else the plain loops.
    static let levels: [Int32] = BLAS.packedProductLevel > 0 ? Array(1...BLAS.packedProductLevel) : [0]

    @Test(arguments: cases, levels)
    func productMatchesFloat64AndThePlainLoops(_ c: Case, level: Int32) throws {
        let o = operands(c)
        let vector = run(c, o, vectorized: level, rows: [0..<c.m])
        #expect(vector == run(c, o, vectorized: 0, rows: [0..<c.m]), "the vector tiles must sum in the plain loops' order")
        // Rows in uneven pieces (as threads take them) give the same bits.
        #expect(vector == run(c, o, vectorized: level, rows: [0..<(c.m / 3), (c.m / 3)..<c.m]))
        for r in 0..<c.m {
            for j in 0..<o.ldc {
                let index = r * o.ldc + j
                guard j < c.n else {
                    #expect(vector[index] == o.before[index], "column \(j) beyond n must be untouched")
                    continue
                }
                var sum = 0.0
                for i in 0..<c.k { sum += Double(o.a[r * o.lda + i]) * Double(o.b[i * o.bRow + j * o.bColumn]) }
                let expected = sum + (c.bias ? Double(o.bias[j]) : 0) + (c.accumulate ? Double(o.before[index]) : 0)
                #expect(abs(Double(vector[index]) - expected) <= 1e-5 * max(1, abs(expected)), "C[\(r), \(j)]")
            }
        }
    }

    // Only where Linear can use it: AVX2 + FMA or AVX-512 (elsewhere the kernel is still tested
    // above, in its plain loops).
    @Test(.enabled(if: BLAS.packedProductAvailable)) func theLinearLayersProductIsTheSameOnTwoThreadsAsOnOne() throws {
        let m = 2000, n = 144, k = 48
        let a = randomValues(m * k, seed: 21), weight = randomValues(n * k, seed: 22), bias = randomValues(n, seed: 23)
        func product(_ pool: ComputePool) -> [Float] {
            var out = [Float](repeating: 0, count: m * n)
            BLAS.packedProduct(m: m, n: n, k: k, a: a, lda: k, b: weight, bRow: 1, bColumn: k, bias: bias, c: &out, ldc: n,
                               accumulate: false, pool: pool)
            return out
        }
        let one = product(.serial)
        #expect(product(ComputePool(threads: 2, splitsMatrixProducts: true)) == one)
        // And it is the layer's product: out = inp · Wᵀ + b, against OpenBLAS within rounding.
        var reference = [Float](repeating: 0, count: m * n)
        for r in 0..<m { for j in 0..<n { reference[r * n + j] = bias[j] } }
        BLAS.sgemm(transposeA: false, transposeB: true, m: m, n: n, k: k, a: a, lda: k, b: weight, ldb: k, beta: 1, c: &reference, ldc: n)
        let worst = zip(one, reference).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 1e-5)
    }
}
