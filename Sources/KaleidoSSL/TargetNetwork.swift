import KaleidoNN
import KaleidoTensor

/// The exponential moving average that makes the target network:
///   θ_t ← γ θ_t + (1 − γ) θ_o
/// over the first `count` floats of the arenas (backbone and projector, which the layout puts
/// before the predictor). Buffers are averaged too, as timm's model EMA does, so the target's
/// BatchNorm statistics follow the online network's.
public enum TargetNetwork {
    public static func update(target: ParameterArena, online: ParameterArena, momentum: Float, count: Int, pool: ComputePool) {
        precondition(count <= target.count && target.count == online.count, "EMA over \(count) of \(target.count) floats")
        let t = target.values.pointer, o = online.values.pointer
        let keep = momentum, take = 1 - momentum
        pool.forEachRange(count, minimumPerThread: 1 << 16) { range in
            for i in range { t[i] = keep * t[i] + take * o[i] }
        }
    }
}
