import Foundation
import KaleidoData

/// The metrics of a run read back from `metrics.jsonl`: per kind ("train", "probe") and key,
/// the (step, value) points in file order. Lines of the same step and kind merge (the online
/// probe writes its own line beside the training metrics).
public struct RunMetrics {
    public var series: [String: [String: [(step: Int, value: Double)]]] = [:]

    public init(file: URL) throws {
        guard let text = try? String(contentsOf: file, encoding: .utf8) else {
            throw EvaluationError.missingMetrics(path: file.deletingLastPathComponent().path)
        }
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw EvaluationError.malformedMetrics(path: file.path, line: number + 1, message: "not a JSON object")
            }
            guard let step = object["step"] as? Int, let kind = object["kind"] as? String else {
                throw EvaluationError.malformedMetrics(path: file.path, line: number + 1, message: "needs integer \"step\" and string \"kind\"")
            }
            for (key, value) in object where key != "step" && key != "kind" {
                // Non-finite values are logged as strings ("nan", "inf"): kept out of the charts.
                guard let number = value as? Double ?? (value as? Int).map(Double.init), number.isFinite else { continue }
                series[kind, default: [:]][key, default: []].append((step, number))
            }
        }
    }

    public func points(_ kind: String, _ key: String) -> [(step: Int, value: Double)] { series[kind]?[key] ?? [] }

    /// The last value of a key, if logged.
    public func last(_ kind: String, _ key: String) -> Double? { points(kind, key).last?.value }
}

/// One chart of the report: a few series of the same unit over steps.
public struct ReportChart {
    public var title: String
    public var file: String
    public var series: [(label: String, points: [(step: Int, value: Double)])]
    /// Show the y axis as percentages.
    public var percent = false

    /// The colour of every chart's first series.
    public static var firstColour: String { colours[0].hex }
    /// The series colours, in order (a chart's n-th series takes the n-th, modulo their count).
    public static var seriesColours: [String] { colours.map(\.hex) }

    static let colours: [(hex: String, rgb: (UInt8, UInt8, UInt8))] = [
        ("#1f77b4", (0x1f, 0x77, 0xb4)), ("#d62728", (0xd6, 0x27, 0x28)), ("#2ca02c", (0x2c, 0xa0, 0x2c)), ("#9467bd", (0x94, 0x67, 0xbd)),
    ]

    /// Data bounds with a margin; a flat series gets a unit-wide band so it draws mid-height.
    var bounds: (x: ClosedRange<Double>, y: ClosedRange<Double>) {
        let all = series.flatMap(\.points)
        let xs = all.map { Double($0.step) }, ys = all.map(\.value)
        var x = (xs.min() ?? 0)...(xs.max() ?? 1), y = (ys.min() ?? 0)...(ys.max() ?? 1)
        if x.lowerBound == x.upperBound { x = (x.lowerBound - 1)...(x.upperBound + 1) }
        if y.lowerBound == y.upperBound {
            let pad = max(abs(y.lowerBound) * 0.1, 1e-3)
            y = (y.lowerBound - pad)...(y.upperBound + pad)
        }
        let pad = (y.upperBound - y.lowerBound) * 0.05
        // Non-negative quantities (rates, throughput) keep a non-negative axis.
        let low = y.lowerBound >= 0 ? max(0, y.lowerBound - pad) : y.lowerBound - pad
        return (x, low...(y.upperBound + pad))
    }

    /// Plot-area coordinates of a point, y downwards, in a width × height area.
    func position(_ step: Int, _ value: Double, width: Double, height: Double) -> (Double, Double) {
        let (x, y) = bounds
        return ((Double(step) - x.lowerBound) / (x.upperBound - x.lowerBound) * width,
                (1 - (value - y.lowerBound) / (y.upperBound - y.lowerBound)) * height)
    }

    static func label(_ value: Double, percent: Bool) -> String {
        if percent { return String(format: "%.0f%%", value * 100) }
        let magnitude = abs(value)
        if magnitude == 0 { return "0" }
        if magnitude >= 1e4 || magnitude < 1e-3 { return String(format: "%.1e", value) }
        return String(format: magnitude >= 100 ? "%.0f" : magnitude >= 1 ? "%.2f" : "%.4f", value)
    }

    /// An inline SVG: axes, 5 ticks per axis, one `<path class="series">` per series whose `d`
    /// holds one "M"/"L" command per point, and a legend.
    public func svg(width: Int = 560, height: Int = 260) -> String {
        let left = 64.0, right = 16.0, top = 28.0, bottom = 36.0
        let w = Double(width) - left - right, h = Double(height) - top - bottom
        let (xr, yr) = bounds
        var out = "<svg width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" "
            + "role=\"img\" aria-label=\"\(HTML.escape(title))\">\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(width)\" height=\"\(height)\" fill=\"#ffffff\"/>\n"
        out += "<text x=\"\(Int(left))\" y=\"18\" font-size=\"14\" font-weight=\"bold\">\(HTML.escape(title))</text>\n"
        out += "<g transform=\"translate(\(left),\(top))\">\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(w)\" height=\"\(h)\" fill=\"none\" stroke=\"#888\"/>\n"
        for i in 0...4 {
            let fraction = Double(i) / 4
            let yValue = yr.lowerBound + (yr.upperBound - yr.lowerBound) * (1 - fraction)
            let xValue = xr.lowerBound + (xr.upperBound - xr.lowerBound) * fraction
            out += "<line x1=\"0\" y1=\(q(fraction * h)) x2=\(q(w)) y2=\(q(fraction * h)) stroke=\"#eee\"/>"
            out += "<text x=\"-6\" y=\(q(fraction * h + 4)) font-size=\"11\" text-anchor=\"end\">\(Self.label(yValue, percent: percent))</text>"
            out += "<text x=\(q(fraction * w)) y=\(q(h + 16)) font-size=\"11\" text-anchor=\"middle\">\(Int(xValue.rounded()))</text>\n"
        }
        out += "<text x=\(q(w / 2)) y=\(q(h + 32)) font-size=\"11\" text-anchor=\"middle\">step</text>\n"
        for (index, line) in series.enumerated() {
            let colour = Self.colours[index % Self.colours.count].hex
            let d = line.points.enumerated().map { i, point in
                let (x, y) = position(point.step, point.value, width: w, height: h)
                return (i == 0 ? "M" : "L") + String(format: "%.1f,%.1f", x, y)
            }.joined(separator: " ")
            out += "<path class=\"series\" data-label=\"\(HTML.escape(line.label))\" data-points=\"\(line.points.count)\" d=\"\(d)\" "
                + "fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
            out += "<text x=\(q(w - 4)) y=\(q(14 + 14 * Double(index))) font-size=\"11\" text-anchor=\"end\" fill=\"\(colour)\">"
                + "\(HTML.escape(line.label))</text>\n"
        }
        return out + "</g>\n</svg>"
    }

    private func q(_ value: Double) -> String { "\"\(String(format: "%.1f", value))\"" }

    /// 5×7 glyphs of the characters axis labels use, one 5-bit row mask per line (bit 4 leftmost).
    static let glyphs: [Character: [UInt8]] = [
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12], ".": [0, 0, 0, 0, 0, 12, 12], "-": [0, 0, 0, 31, 0, 0, 0],
        "e": [0, 0, 14, 17, 31, 16, 14], "%": [24, 25, 2, 4, 8, 19, 3], "+": [0, 4, 4, 31, 4, 4, 0],
    ]

    /// The same chart as a raster: white background, grey frame and grid, each series a 2-px
    /// polyline, and the axis extremes in a 5×7 pixel font (titles and legends are on the page).
    public func raster(width: Int = 640, height: Int = 320) -> Image8 {
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        func plot(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
            guard x >= 0, y >= 0, x < width, y < height else { return }
            let i = (y * width + x) * 3
            pixels[i] = c.0; pixels[i + 1] = c.1; pixels[i + 2] = c.2
        }
        func line(_ a: (Double, Double), _ b: (Double, Double), _ c: (UInt8, UInt8, UInt8), thick: Bool) {
            let steps = max(1, Int(max(abs(b.0 - a.0), abs(b.1 - a.1)).rounded(.up)))
            for s in 0...steps {
                let t = Double(s) / Double(steps)
                let x = Int((a.0 + (b.0 - a.0) * t).rounded()), y = Int((a.1 + (b.1 - a.1) * t).rounded())
                plot(x, y, c)
                if thick { plot(x + 1, y, c); plot(x, y + 1, c) }
            }
        }
        let left = 56.0, top = 16.0, w = Double(width) - 72, h = Double(height) - 48
        let ink: (UInt8, UInt8, UInt8) = (0x44, 0x44, 0x44)
        /// Draws `text` with its right edge at `right` (or left edge at `x`) and top at `y`.
        func text(_ text: String, x: Double, y: Double, alignRight: Bool = false) {
            let start = Int(alignRight ? x - Double(text.count * 6) + 1 : x)
            for (i, character) in text.enumerated() {
                guard let rows = Self.glyphs[character] else { continue }
                for (row, mask) in rows.enumerated() {
                    for column in 0..<5 where mask & (16 >> column) != 0 { plot(start + i * 6 + column, Int(y) + row, ink) }
                }
            }
        }
        let (xr, yr) = bounds
        text(Self.label(yr.upperBound, percent: percent), x: left - 4, y: top, alignRight: true)
        text(Self.label(yr.lowerBound, percent: percent), x: left - 4, y: top + h - 7, alignRight: true)
        text("\(Int(xr.lowerBound.rounded()))", x: left, y: top + h + 6)
        text("\(Int(xr.upperBound.rounded()))", x: left + w, y: top + h + 6, alignRight: true)
        let grid: (UInt8, UInt8, UInt8) = (0xe4, 0xe4, 0xe4), frame: (UInt8, UInt8, UInt8) = (0x88, 0x88, 0x88)
        for i in 1..<4 {
            let y = top + h * Double(i) / 4, x = left + w * Double(i) / 4
            line((left, y), (left + w, y), grid, thick: false)
            line((x, top), (x, top + h), grid, thick: false)
        }
        line((left, top), (left + w, top), frame, thick: false); line((left, top + h), (left + w, top + h), frame, thick: false)
        line((left, top), (left, top + h), frame, thick: false); line((left + w, top), (left + w, top + h), frame, thick: false)
        for (index, series) in series.enumerated() {
            let colour = Self.colours[index % Self.colours.count].rgb
            let points = series.points.map { point -> (Double, Double) in
                let (x, y) = position(point.step, point.value, width: w, height: h)
                return (left + x, top + y)
            }
            if points.count == 1 { line(points[0], points[0], colour, thick: true) }
            for (a, b) in zip(points, points.dropFirst()) { line(a, b, colour, thick: true) }
        }
        return Image8(width: width, height: height, channels: 3, pixels: pixels)
    }
}

enum HTML {
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// `kaleido report`: one self-contained HTML page for a run directory (inline SVG charts and
/// CSS, no scripts, no external files) with the training curves and every result table, plus
/// each curve as a PNG beside it.
public struct RunReport {
    public let runDirectory: URL
    public let metrics: RunMetrics
    public let records: [EvaluationRecord]

    public init(runDirectory: URL) throws {
        self.runDirectory = runDirectory
        metrics = try RunMetrics(file: runDirectory.appendingPathComponent("metrics.jsonl"))
        records = try EvaluationRecord.readAll(in: EvaluationRecord.directory(run: runDirectory))
    }

    /// The charts that have data: loss, loss per modality, learning rate, EMA momentum, throughput, online probe.
    public var charts: [ReportChart] {
        func chart(_ title: String, _ file: String, _ keys: [(String, String)], percent: Bool = false) -> ReportChart? {
            let series = keys.map { (label: $0.1, points: metrics.points("train", $0.0)) }.filter { !$0.points.isEmpty }
            return series.isEmpty ? nil : ReportChart(title: title, file: file, series: series, percent: percent)
        }
        return [
            chart("Loss", "loss", [("loss", "total"), ("contrastive", "contrastive"), ("divergence", "KL divergence"),
                                   ("supervised", "supervised")].filter { key, _ in
                key != "supervised" || metrics.points("train", "supervised").contains { $0.value != 0 } }),
            // Joint runs: each modality's own loss (absent from single-modality runs).
            chart("Loss per modality", "loss_by_modality", ["image", "video", "rgbd"].map { ("loss_\($0)", $0) }),
            chart("Learning rate", "lr", [("lr", "lr")]),
            chart("EMA momentum", "ema_momentum", [("ema_momentum", "γ")]),
            chart("Throughput (images/s)", "images_per_second", [("images_per_second", "images/s")]),
            chart("Online probe accuracy", "online_probe_acc", [("online_probe_acc", "online probe top-1")], percent: true),
            chart("Online probe loss", "online_probe_loss", [("online_probe_loss", "cross-entropy")]),
        ].compactMap { $0 }
    }

    /// Writes `report.html` and `report/<chart>.png` into the run directory (or `output`);
    /// returns the HTML file.
    @discardableResult
    public func write(to output: URL? = nil) throws -> URL {
        let directory = output ?? runDirectory
        let pngs = directory.appendingPathComponent("report")
        try FileManager.default.createDirectory(at: pngs, withIntermediateDirectories: true)
        for chart in charts {
            try ImageCodec.writePNG(chart.raster(), to: pngs.appendingPathComponent("\(chart.file).png").path)
        }
        let url = directory.appendingPathComponent("report.html")
        try html().write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    public func html() -> String {
        let name = runDirectory.lastPathComponent
        var body = "<h1>Kaleido run <code>\(HTML.escape(name))</code></h1>\n"
        body += "<p class=\"meta\">\(HTML.escape(runDirectory.path)) — generated \(ISO8601DateFormatter().string(from: Date()))</p>\n"
        body += summaryTable()
        body += "<h2>Training curves</h2>\n<div class=\"charts\">\n"
        let charts = self.charts
        if charts.isEmpty { body += "<p>No training metrics logged.</p>\n" }
        for chart in charts {
            body += "<figure>\(chart.svg())<figcaption><a href=\"report/\(chart.file).png\">PNG</a></figcaption></figure>\n"
        }
        body += "</div>\n"
        body += pretrainingProbeTable()
        for (kind, title) in [("linear", "Linear probe"), ("knn", "k-NN"), ("finetune", "Semi-supervised fine-tuning"),
                              ("retrieval", "Cross-modal retrieval")] {
            body += recordTable(records.filter { $0.kind == kind }, title: title)
        }
        if let config = try? String(contentsOf: runDirectory.appendingPathComponent("config.yaml"), encoding: .utf8) {
            body += "<h2>Configuration</h2>\n<details><summary>config.yaml</summary><pre>\(HTML.escape(config))</pre></details>\n"
        }
        return """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Kaleido report: \(HTML.escape(name))</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
        h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
        .meta { color: #666; font-size: 13px; }
        .charts { display: flex; flex-wrap: wrap; gap: 12px; }
        figure { margin: 0; background: #fff; border: 1px solid #ddd; }
        figcaption { font-size: 12px; padding: 2px 8px; }
        table { border-collapse: collapse; background: #fff; font-size: 13px; }
        th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
        th:first-child, td:first-child { text-align: left; }
        pre { background: #fff; border: 1px solid #ddd; padding: 8px; font-size: 12px; }
        </style>
        </head>
        <body>
        \(body)</body>
        </html>

        """
    }

    func summaryTable() -> String {
        var rows: [(String, String)] = []
        if let last = metrics.points("train", "loss").last { rows.append(("steps logged", "\(last.step)")) }
        for (key, label) in [("loss", "final loss"), ("images_per_second", "images/s"), ("online_probe_acc", "online probe top-1")] {
            if let value = metrics.last("train", key) {
                rows.append((label, key == "online_probe_acc" ? String(format: "%.1f%%", value * 100) : ReportChart.label(value, percent: false)))
            }
        }
        guard !rows.isEmpty else { return "" }
        return "<table class=\"summary\">\n" + rows.map { "<tr><th>\(HTML.escape($0.0))</th><td>\(HTML.escape($0.1))</td></tr>" }
            .joined(separator: "\n") + "\n</table>\n"
    }

    /// The probe `kaleido pretrain` ran at the end (metrics kind "probe").
    func pretrainingProbeTable() -> String {
        guard let probe = metrics.series["probe"], !probe.isEmpty else { return "" }
        var out = "<h2>Probe at the end of pretraining</h2>\n<table class=\"results\" data-kind=\"probe\">\n<tr><th>metric</th><th>value</th></tr>\n"
        for key in probe.keys.sorted() {
            guard let value = probe[key]?.last?.value else { continue }
            out += "<tr><td>\(HTML.escape(key))</td><td>\(String(format: "%.1f%%", value * 100))</td></tr>\n"
        }
        return out + "</table>\n"
    }

    func recordTable(_ records: [EvaluationRecord], title: String) -> String {
        guard let kind = records.first?.kind else { return "" }
        let keys = Array(Set(records.flatMap(\.metrics.keys))).sorted()
        var out = "<h2>\(HTML.escape(title))</h2>\n<table class=\"results\" data-kind=\"\(kind)\">\n<tr><th>evaluation</th>"
            + keys.map { "<th>\(HTML.escape($0))</th>" }.joined() + "<th>step</th><th>encoder</th><th>data</th><th>settings</th><th>seconds</th></tr>\n"
        for record in records {
            out += "<tr><td>\(HTML.escape(record.name))</td>"
            out += keys.map { key in "<td>\(record.metrics[key].map { EvaluationTable.format(key, $0) } ?? "")</td>" }.joined()
            let settings = record.settings.keys.sorted().map { "\($0)=\(record.settings[$0]!)" }.joined(separator: " ")
            out += "<td>\(record.step)</td><td>\(HTML.escape(record.encoder))</td><td>\(HTML.escape(record.data))</td>"
                + "<td>\(HTML.escape(settings))</td><td>\(String(format: "%.1f", record.seconds))</td></tr>\n"
        }
        return out + "</table>\n"
    }
}

/// Renders a page in a headless browser (Chromium or Chrome) and measures the screenshot, to
/// check that a report draws: a blank or broken page is a single colour.
public enum ReportScreenshot {
    public struct Measurement: Sendable {
        public var width: Int
        public var height: Int
        /// Share of pixels that differ from the top-left (background) pixel.
        public var inkFraction: Double
        /// Pixels in each series colour of the charts (within a small tolerance), by hex colour.
        public var seriesPixels: [String: Int]
    }

    /// The first headless-capable browser on PATH, if any.
    public static func browser(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        let path = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            for directory in path where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
                return "\(directory)/\(name)"
            }
        }
        return nil
    }

    /// Screenshots `page` into `png` with `browser` and measures it.
    public static func capture(page: URL, to png: URL, browser: String, width: Int = 1280, height: Int = 1600) throws -> Measurement {
        try? FileManager.default.removeItem(at: png)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: browser)
        // --no-sandbox: the sandbox refuses to start as root (CI containers).
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                             "--user-data-dir=\(FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-chromium-\(getpid())").path)",
                             "--window-size=\(width),\(height)", "--screenshot=\(png.path)", page.absoluteString]
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard FileManager.default.fileExists(atPath: png.path) else {
            throw EvaluationError.unsupported("\(browser) wrote no screenshot (exit \(process.terminationStatus)): "
                                              + String(decoding: stderr.suffix(2000), as: UTF8.self))
        }
        let image = try ImageCodec.readPNG(png.path)
        let p = image.pixels
        let background = (p[0], p[1], p[2])
        var ink = 0
        var series = [Int](repeating: 0, count: ReportChart.colours.count)
        for i in stride(from: 0, to: p.count, by: 3) {
            if (p[i], p[i + 1], p[i + 2]) != background { ink += 1 }
            for (index, colour) in ReportChart.colours.enumerated() {
                let (r, g, b) = colour.rgb
                if abs(Int(p[i]) - Int(r)) < 24 && abs(Int(p[i + 1]) - Int(g)) < 24 && abs(Int(p[i + 2]) - Int(b)) < 24 { series[index] += 1 }
            }
        }
        return Measurement(width: image.width, height: image.height, inkFraction: Double(ink) / Double(image.width * image.height),
                           seriesPixels: Dictionary(uniqueKeysWithValues: zip(ReportChart.colours.map(\.hex), series)))
    }

    /// The page's DOM after the browser has parsed and laid it out (`--dump-dom`): what a
    /// reader's browser has, whatever the HTML text says.
    public static func renderedDOM(page: URL, browser: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: browser)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--user-data-dir=\(FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-chromium-\(getpid())").path)",
                             "--dump-dom", page.absoluteString]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let dom = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, !dom.isEmpty else {
            throw EvaluationError.unsupported("\(browser) --dump-dom failed (exit \(process.terminationStatus))")
        }
        return String(decoding: dom, as: UTF8.self)
    }
}
