import CKernels
import Foundation
import Testing
@testable import KaleidoTensor

/// `kaleido_accumulate_outer_products` (weight gradients, C += Aᵀ · B over long k): the AVX-512
/// tiles (where the CPU has them) bit for bit against the plain loops, and both against Float64,
/// with tiles of every height and width, column tails, strides wider than the rows, blocks of k,
/// and C's old values kept; and `BLAS.outerProductTiles` on 1, 2 and 3 threads.
@Suite struct OuterProductsTests {
    struct Case: CustomStringConvertible, Sendable {
        let m, n, k: Int
        var description: String { "\(m)×\(n) over \(k) rows" }
    }

    // Heights 1–6 past whole 6-row tiles; widths of 1–4 vectors of 16 lanes and several column
    // tiles, with and without a tail; k across several row blocks (32–256 rows each, by n).
    static let cases: [Case] = [(1, 16, 5), (7, 33, 300), (13, 64, 700), (6, 100, 90), (25, 24, 1100), (4, 8, 3),
                                (11, 200, 257), (3, 7, 40)].map { Case(m: $0.0, n: $0.1, k: $0.2) }

    struct Operands {
        let a, b, before: [Float]
        let lda, ldb, ldc: Int
    }

    func operands(_ c: Case) -> Operands {
        let lda = c.m + 3, ldb = c.n + 5, ldc = c.n + 2
        return Operands(a: randomValues(c.k * lda, seed: 31), b: randomValues(c.k * ldb, seed: 32),
                        before: randomValues(c.m * ldc, seed: 33), lda: lda, ldb: ldb, ldc: ldc)
    }

    func run(_ c: Case, _ o: Operands, vectorized: Int32, pieces: Int = 1) -> [Float] {
        var out = o.before
        let tiles = Int(kaleido_outer_products_tiles(vectorized, Int32(c.m), Int32(c.n)))
        for piece in 0..<pieces {
            kaleido_accumulate_outer_products(vectorized, Int32(tiles * piece / pieces), Int32(tiles * (piece + 1) / pieces),
                                              Int32(c.m), Int32(c.n), Int32(c.k), o.a, o.lda, o.b, o.ldb, &out, o.ldc)
        }
        return out
    }

    /// The plain loops, and the AVX-512 tiles where this CPU runs them (below level 2 the kernel
    /// runs the plain loops).
    static let levels: [Int32] = BLAS.packedProductLevel >= 2 ? [0, 2] : [0]

    @Test(arguments: cases, levels)
    func sumsMatchFloat64AndThePlainLoops(_ c: Case, level: Int32) throws {
        let o = operands(c)
        let vector = run(c, o, vectorized: level)
        if level > 0 {
            #expect(vector == run(c, o, vectorized: 0), "the vector tiles must sum in the plain loops' order")
        }
        // The tiles in uneven pieces (as threads take them) give the same bits.
        #expect(vector == run(c, o, vectorized: level, pieces: 3))
        let padding = (0..<c.m).flatMap { r in (c.n..<o.ldc).map { r * o.ldc + $0 } }
        #expect(padding.allSatisfy { vector[$0] == o.before[$0] }, "columns past n must be untouched")
        for r in 0..<c.m {
            for j in 0..<c.n {
                let index = r * o.ldc + j
                var sum = Double(o.before[index]), magnitude = abs(sum)
                for i in 0..<c.k {
                    let term = Double(o.a[i * o.lda + r]) * Double(o.b[i * o.ldb + j])
                    sum += term
                    magnitude += abs(term)
                }
                // Float32 rounding of k steps: far below one misplaced term (|term| up to 1).
                #expect(abs(Double(vector[index]) - sum) <= 1e-6 * (1 + magnitude), "C[\(r), \(j)]")
            }
        }
    }

    // Only where the tiles run: below AVX-512, C is one tile and one thread.
    @Test(.enabled(if: BLAS.packedProductLevel >= 2)) func theWeightGradientIsTheSameOnAnyThreadCount() throws {
        // 40 × 96 over 3000 rows: a layer's weight gradient in the tiles' range (k ≥ 1024).
        let m = 40, n = 96, k = 3000
        let a = randomValues(k * m, seed: 41), b = randomValues(k * n, seed: 42), before = randomValues(m * n, seed: 43)
        func gradient(_ pool: ComputePool) -> [Float] {
            var c = before
            BLAS.outerProductTiles(m: m, n: n, k: k, a: a, lda: m, b: b, ldb: n, c: &c, ldc: n, pool: pool)
            return c
        }
        let one = gradient(.serial)
        #expect(gradient(ComputePool(threads: 2, splitsMatrixProducts: true)) == one)
        #expect(gradient(ComputePool(threads: 3, splitsMatrixProducts: true)) == one)
        // Against OpenBLAS: the same sums within rounding.
        var reference = before
        BLAS.sgemm(transposeA: true, transposeB: false, m: m, n: n, k: k, a: a, lda: m, b: b, ldb: n, beta: 1, c: &reference, ldc: n)
        let worst = zip(one, reference).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 2e-4)
    }
}
