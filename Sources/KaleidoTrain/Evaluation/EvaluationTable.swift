import Foundation

/// Plain-text tables of evaluation records for the terminal.
public enum EvaluationTable {
    /// Metrics that are fractions, printed as percentages.
    static func isRate(_ key: String) -> Bool {
        ["top1", "top5", "train_top1", "ema_top1", "ema_top5", "chance"].contains(key) || key.hasPrefix("recall@") || key.hasPrefix("chance@")
    }

    public static func format(_ key: String, _ value: Double) -> String {
        if isRate(key) { return String(format: "%.1f%%", value * 100) }
        if value == value.rounded() && abs(value) < 1e9 { return String(Int(value)) }
        return String(format: "%.4g", value)
    }

    /// `name  key value  key value …` with the settings below.
    public static func text(_ record: EvaluationRecord) -> String {
        let metrics = record.metrics.keys.sorted().map { "\($0) \(format($0, record.metrics[$0]!))" }.joined(separator: "   ")
        let settings = record.settings.keys.sorted().map { "\($0)=\(record.settings[$0]!)" }.joined(separator: " ")
        return "\(record.name) (step \(record.step), \(record.encoder) encoder, \(record.data), \(String(format: "%.1f", record.seconds)) s)\n"
            + "  \(metrics)\n  \(settings)"
    }
}
