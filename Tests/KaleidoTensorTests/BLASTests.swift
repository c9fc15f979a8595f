import Testing
@testable import KaleidoTensor

@Suite struct BLASTests {
    /// Naive row-major reference for C = op(A)·op(B).
    func reference(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var sum: Float = 0
                for p in 0..<k {
                    let x = transposeA ? a[p * m + i] : a[i * k + p]
                    let y = transposeB ? b[j * k + p] : b[p * n + j]
                    sum += x * y
                }
                c[i * n + j] = sum
            }
        }
        return c
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func sgemmMatchesNaiveProductForEveryTranspose(transposeA: Bool, transposeB: Bool) {
        let (m, n, k) = (5, 7, 3)
        var rng = SystemRandomNumberGenerator()
        let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &rng) }
        let b = (0..<(k * n)).map { _ in Float.random(in: -1...1, using: &rng) }
        var c = [Float](repeating: 0, count: m * n)
        BLAS.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                   a: a, lda: transposeA ? m : k, b: b, ldb: transposeB ? k : n, c: &c, ldc: n)
        let expected = reference(a, b, m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB)
        for (x, y) in zip(c, expected) { #expect(abs(x - y) < 1e-5) }
    }

    /// A product cut into pieces over a splitting pool (rows of C when M ≥ N, columns
    /// otherwise) equals the naive product, with alpha and beta, for every transpose; and the
    /// pieces depend on the shape only, so two and three threads give the same bits.
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func pooledSgemmMatchesNaiveProductAndIsTheSameForAnyThreadCount(transposeA: Bool, transposeB: Bool) {
        for (m, n, k) in [(517, 130, 64), (70, 600, 48)] {
            var rng = SplitMix64(seed: UInt64(m))
            let a = (0..<(m * k)).map { _ in rng.normal() }
            let b = (0..<(k * n)).map { _ in rng.normal() }
            let start = (0..<(m * n)).map { _ in rng.normal() }
            let expected = zip(reference(a, b, m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB), start)
                .map { 0.5 * $0 + 2 * $1 }
            let results = [2, 3].map { threads in
                var c = start
                BLAS.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5,
                           a: a, lda: transposeA ? m : k, b: b, ldb: transposeB ? k : n, beta: 2, c: &c, ldc: n,
                           pool: ComputePool(threads: threads, splitsMatrixProducts: true))
                return c
            }
            #expect(results[0] == results[1])
            let worst = zip(results[0], expected).map { abs($0 - $1) }.max()!
            #expect(worst < 1e-3)
        }
    }

    @Test func sgemmAccumulatesWithBeta() {
        let a: [Float] = [1, 2, 3, 4]  // 2×2
        let b: [Float] = [1, 0, 0, 1]  // identity
        var c: [Float] = [10, 10, 10, 10]
        BLAS.sgemm(transposeA: false, transposeB: false, m: 2, n: 2, k: 2, alpha: 2, a: a, lda: 2, b: b, ldb: 2,
                   beta: 1, c: &c, ldc: 2)
        #expect(c == [12, 14, 16, 18])
    }

    @Test(arguments: [false, true])
    func sgemvMatchesTheProduct(transposeA: Bool) {
        let a: [Float] = [1, 2, 3, 4, 5, 6]  // 2×3
        let x: [Float] = transposeA ? [1, -1] : [1, 0, -1]
        var y: [Float] = transposeA ? [1, 1, 1] : [1, 1]
        BLAS.sgemv(transposeA: transposeA, m: 2, n: 3, a: a, lda: 3, x: x, beta: 1, y: &y)
        #expect(y == (transposeA ? [-2, -2, -2] : [-1, -1]))
    }

    @Test func stridedBatchedProductsMatchOneProductPerBatch() {
        let (m, n, k, batch) = (3, 4, 5, 6)
        let a = randomValues(batch * m * k, seed: 1), b = randomValues(batch * k * n, seed: 2)
        var c = [Float](repeating: 0, count: batch * m * n)
        BLAS.sgemmStridedBatched(transposeA: false, transposeB: false, m: m, n: n, k: k,
                                 a: a, lda: k, strideA: m * k, b: b, ldb: n, strideB: k * n,
                                 c: &c, ldc: n, strideC: m * n, batch: batch, pool: ComputePool(threads: 2))
        for i in 0..<batch {
            let expected = reference(Array(a[(i * m * k)..<((i + 1) * m * k)]), Array(b[(i * k * n)..<((i + 1) * k * n)]),
                                     m: m, n: n, k: k, transposeA: false, transposeB: false)
            for (x, y) in zip(c[(i * m * n)..<((i + 1) * m * n)], expected) { #expect(abs(x - y) < 1e-5) }
        }
    }

    /// A weight gradient's shape, dW (m×n) += doutᵀ · inp over k rows, with strides wider than
    /// the matrices, and C's old value kept.
    @Test(arguments: [(144, 48, 16384), (96, 384, 4500), (48, 192, 4096), (144, 48, 3000), (640, 96, 2100)])
    func outerProductsMatchFloat64AndDoNotDependOnTheThreads(m: Int, n: Int, k: Int) {
        let lda = m + 3, ldb = n + 1, ldc = n + 2
        let a = randomValues(k * lda, seed: 31), b = randomValues(k * ldb, seed: 32), before = randomValues(m * ldc, seed: 33)
        func run(_ pool: ComputePool) -> [Float] {
            var c = before
            BLAS.accumulateOuterProducts(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: &c, ldc: ldc, pool: pool)
            return c
        }
        BLAS.threadCount = 1
        let serial = run(.serial)
        #expect(run(ComputePool(threads: 2, splitsMatrixProducts: true)) == serial, "\(m)×\(n)×\(k): two threads, one")
        #expect(run(ComputePool(threads: 3, splitsMatrixProducts: true)) == serial, "\(m)×\(n)×\(k): three threads, one")
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<ldc {
                let index = i * ldc + j
                guard j < n else {
                    #expect(serial[index] == before[index], "column \(j) beyond n must be untouched")
                    continue
                }
                // Against the sum of the terms' magnitudes, which bounds Float32's rounding of
                // a sum of k terms; a lost or doubled chunk would be off by thousands of times more.
                var sum = Double(before[index]), magnitude = abs(Double(before[index]))
                for r in 0..<k {
                    let term = Double(a[r * lda + i]) * Double(b[r * ldb + j])
                    sum += term
                    magnitude += abs(term)
                }
                worst = max(worst, abs(Double(serial[index]) - sum) / magnitude)
            }
        }
        #expect(worst < 1e-6, "\(m)×\(n)×\(k): error \(worst) of the terms' magnitude")
    }

    @Test func outerProductsCutTheRowsOnlyWhereCuttingCWouldIdleThreads() {
        #expect(BLAS.outerProductChunks(m: 144, n: 48, k: 16384) == 8)      // C is one piece: 8 chunks of 2048 rows
        #expect(BLAS.outerProductChunks(m: 384, n: 96, k: 50176) == 16)     // three pieces of C: at most 16 chunks
        #expect(BLAS.outerProductChunks(m: 144, n: 48, k: 3000) == 1)       // one chunk's worth of rows
        #expect(BLAS.outerProductChunks(m: 768, n: 192, k: 50176) == 1)     // six pieces of C keep two threads busy
        #expect(BLAS.outerProductChunks(m: 500, n: 500, k: 50176) == 4)     // 4 MB of partials at most
    }

    @Test func configurationNamesOpenBLASAndThreadCountIsSettable() {
        #expect(BLAS.configuration.contains("OpenBLAS"))
        // Left at 1, the count every Kaleido pool runs OpenBLAS with: the tests share one process,
        // and OpenBLAS's own threads would change other tests' sums while this one runs.
        BLAS.threadCount = 1
        #expect(BLAS.threadCount == 1)
    }
}
