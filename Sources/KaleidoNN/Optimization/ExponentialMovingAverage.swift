import KaleidoTensor

/// The exponential moving average of weights:
///   θ_avg ← γ θ_avg + (1 − γ) θ
/// over the first `count` floats of two arenas of one layout. ReLICv2's target network is the
/// EMA of the online one over backbone and projector (which the layout puts before the
/// predictor); fine-tuning keeps an EMA of all its weights (timm's model EMA). Buffers are
/// averaged too, as timm does, so an averaged network's BatchNorm statistics follow the trained one's.
public enum ExponentialMovingAverage {
    public static func update(average: ParameterArena, toward current: ParameterArena, momentum: Float, count: Int,
                              pool: ComputePool) {
        precondition(count <= average.count && average.count == current.count, "EMA over \(count) of \(average.count) floats")
        let t = average.values.pointer, o = current.values.pointer
        let keep = momentum, take = 1 - momentum
        pool.forEachRange(count, minimumPerThread: 1 << 16) { range in
            for i in range { t[i] = keep * t[i] + take * o[i] }
        }
    }
}
