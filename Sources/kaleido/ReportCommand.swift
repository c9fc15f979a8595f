import ArgumentParser
import Foundation
import KaleidoTrain

extension Kaleido {
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a self-contained HTML report of a run: training curves and every evaluation result.",
            discussion: """
            Reads RUN_DIR/metrics.jsonl, RUN_DIR/config.yaml and the results in RUN_DIR/eval/ (written by `kaleido eval` and \
            `kaleido finetune`), and writes RUN_DIR/report.html (inline SVG charts and CSS, no scripts or external files) \
            and RUN_DIR/report/<curve>.png.
            """)

        @Argument(help: ArgumentHelp("The run directory (<run.output_dir>/<run.name>).", valueName: "run-dir"))
        var runDirectory: String

        @Option(help: ArgumentHelp("Write the report here instead of the run directory.", valueName: "dir"))
        var output: String?

        @Option(help: ArgumentHelp("Also render the page in headless Chromium into this PNG and check it is not blank.",
                                   valueName: "png"))
        var screenshot: String?

        func run() throws {
            let report = try RunReport(runDirectory: URL(fileURLWithPath: runDirectory))
            let page = try report.write(to: output.map { URL(fileURLWithPath: $0) })
            print("wrote \(page.path) (\(report.charts.count) charts, \(report.records.count) evaluation results)")
            guard let screenshot else { return }
            guard let browser = ReportScreenshot.browser() else {
                throw ValidationError("--screenshot needs chromium (apt-get install chromium) or google-chrome on PATH")
            }
            let shot = try ReportScreenshot.capture(page: page, to: URL(fileURLWithPath: screenshot), browser: browser)
            let first = shot.seriesPixels[ReportChart.firstColour] ?? 0
            print(String(format: "screenshot %@: %d×%d, %.1f%% of pixels drawn, %d in the first series colour", screenshot,
                         shot.width, shot.height, shot.inkFraction * 100, first))
            if shot.inkFraction < 0.01 || (report.charts.isEmpty == false && first == 0) {
                throw ValidationError("the rendered report looks blank: \(screenshot)")
            }
        }
    }
}
