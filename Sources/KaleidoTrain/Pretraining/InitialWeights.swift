import Foundation
import KaleidoCheckpoint
import KaleidoDist
import KaleidoSSL
import KaleidoSafeTensors

/// `model.init`: public weights as the encoder's starting point.
public enum InitialWeights {
    /// Encoder parts a file may lack and that then start from their initialisation: Omnivore's
    /// depth patch embedding, which video-only weights (torchvision's `swin3d_t` on Kinetics)
    /// do not have — zero-started (`model.zero_init_residual`), an RGB-D scene then begins as its
    /// RGB image.
    public static let freshWhereAbsent = ["depth_patch_embed."]

    /// Loads the safetensors state dict at `path` into the encoder of `model` — every online
    /// entry but the SSL projector and predictor — and copies the result into the target, so
    /// both start from the file. Strict: an encoder entry the file lacks, a file tensor the
    /// encoder lacks, or a shape that differs stops with every problem named (the first ten of
    /// each kind), before anything is written. Names starting with a prefix of `ignoring` are
    /// skipped on both sides; `freshWhereAbsent` parts may be absent (`report.missing` names them).
    ///
    /// A file in Omnivore's official naming (`trunk.layers.i.blocks.j…`) is read under Kaleido's
    /// names first (`OmnivoreCheckpointNames`); `ignoring` then takes Kaleido's names. Relative
    /// position tables of another attention window fail the shape check with a note naming the
    /// windows and the `model.arch` that has the file's.
    @discardableResult
    public static func load(_ path: String, ignoring prefixes: [String], into model: ReLICv2Model) throws -> ArenaImportReport {
        var file = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: path))
        let official = OmnivoreCheckpointNames.isOfficial(file.names)
        if official { file = try OmnivoreCheckpointNames.translated(file) }
        let report: ArenaImportReport
        do {
            report = try ArenaSafeTensors.load(file, into: model.online, entries: { entry in
                !LoadedCheckpoint.headPrefixes.contains { entry.spec.name.hasPrefix($0) }
            }, ignoring: prefixes, optional: Self.freshWhereAbsent)
        } catch var error as ArenaImportError {
            error.skipHint = "list the prefixes to skip in model.init_ignore"
            if let window = SwinWindowNote.note(for: error.problems, file: file, arena: model.online) { error.notes.append(window) }
            if official { error.notes.append(OmnivoreCheckpointNames.translationNote) }
            throw error
        }
        model.target.values.pointer.update(from: model.online.values.pointer, count: model.online.count)
        return report
    }

    /// The weights of `file` in `config`'s model, written as a step-0 checkpoint of the run
    /// directory `runDirectory` (replacing one written before): what `kaleido eval` and
    /// `finetune --init` evaluate, through the same stack as a pretrained run's checkpoint.
    public static func checkpoint(file: String, config: KaleidoConfig, runDirectory: URL) throws -> URL {
        var config = config
        config.model.`init` = file
        let model = try Pretrainer(config: config, communicator: LocalCommunicator(), threads: 1).makeModel()
        try load(file, ignoring: config.model.initIgnore, into: model)
        let store = CheckpointStore(directory: runDirectory.appendingPathComponent("checkpoints"), keep: 1)
        let content = CheckpointContent(step: 0, config: try ConfigLoader.yaml(of: config),
                                        arrays: [SavedArray(name: "online", arena: model.online), SavedArray(name: "target", arena: model.target)])
        return try store.save(content, communicator: LocalCommunicator())
    }
}
