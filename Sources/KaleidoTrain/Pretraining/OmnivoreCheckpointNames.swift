import KaleidoCheckpoint
import KaleidoNN
import KaleidoSafeTensors

/// Omnivore's released checkpoints (facebookresearch/omnivore: `omnivore_swinT`, `_swinS`,
/// `_swinB`, …) in Kaleido's names, so `model.init` takes them as published.
///
/// A release is `{"trunk": …, "heads": …}`, the state dicts of `OmnivoreModel.trunk` (Video
/// Swin's `SwinTransformer3D`) and `.heads`; `tools/pth-to-safetensors.py` flattens it to
/// `trunk.*` and `heads.*` (an `OmnivoreModel`'s own state dict), or with `--key trunk` keeps the
/// trunk alone, unprefixed. The modules are the ones Kaleido has under torchvision's `swin3d`
/// names — the same parameters in the same layouts (qkv as (3C, C), merging's 2×2 neighbours in
/// the same order, the same relative-position index formula), checked against the official code
/// by `tools/fixtures/make_init_fixtures.py --official-swin` — so importing is a renaming:
///
///     official                                   Kaleido (torchvision swin3d)
///     trunk.patch_embed.{proj,norm}.*            patch_embed.{proj,norm}.*
///     trunk.depth_patch_embed.{proj,norm}.*      depth_patch_embed.{proj,norm}.*
///     trunk.layers.{i}.blocks.{j}.mlp.fc1.*      features.{2i}.{j}.mlp.0.*
///     trunk.layers.{i}.blocks.{j}.mlp.fc2.*      features.{2i}.{j}.mlp.3.*
///     trunk.layers.{i}.blocks.{j}.*              features.{2i}.{j}.*   (norm1, attn.*, norm2)
///     trunk.layers.{i}.downsample.*              features.{2i+1}.*     (reduction, norm)
///     trunk.norm.*                               norm.*
///     heads.video.1.*                            heads.video.*         (the Linear behind a Dropout)
///     heads.image.*, heads.rgbd.*                unchanged
enum OmnivoreCheckpointNames {
    /// Whether `names` are Omnivore's official ones: under `trunk.`, or a bare trunk (`layers.`,
    /// a prefix no Kaleido model uses: torchvision's ResNet says `layer1.`, timm's ConvNeXt `stages.`).
    static func isOfficial(_ names: [String]) -> Bool {
        names.contains { $0.hasPrefix("trunk.") || $0.hasPrefix("layers.") }
    }

    /// The Kaleido name of an official tensor name; names outside the table come back unchanged
    /// (the strict check then reports them as unexpected).
    static func kaleidoName(_ official: String) -> String {
        if official.hasPrefix("heads.video.1.") { return "heads.video." + official.dropFirst("heads.video.1.".count) }
        if official.hasPrefix("heads.") { return official }
        let name = official.hasPrefix("trunk.") ? String(official.dropFirst("trunk.".count)) : official
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3, parts[0] == "layers", let stage = Int(parts[1]) else { return name }
        if parts[2] == "downsample" {
            return (["features", String(2 * stage + 1)] + parts.dropFirst(3)).joined(separator: ".")
        }
        guard parts[2] == "blocks", parts.count >= 5, Int(parts[3]) != nil else { return name }
        var rest = Array(parts.dropFirst(4))
        if rest.count >= 2, rest[0] == "mlp" {
            // Video Swin's Mlp names its layers; torchvision's MLP is a Sequential of Linear, GELU, Dropout, Linear, Dropout.
            rest[1] = ["fc1": "0", "fc2": "3"][rest[1]] ?? rest[1]
        }
        return (["features", String(2 * stage), parts[3]] + rest).joined(separator: ".")
    }

    /// `file` with its tensors under Kaleido's names.
    static func translated(_ file: SafeTensorsFile) throws -> SafeTensorsFile {
        try file.renamingTensors(kaleidoName)
    }

    /// For an import error of a translated file: the names it shows are Kaleido's.
    static let translationNote = "the file uses Omnivore's official names, translated to Kaleido's before the check "
        + "(trunk.layers.i.blocks.j → features.2i.j, trunk.layers.i.downsample → features.2i+1, mlp.fc1/fc2 → mlp.0/3, "
        + "heads.video.1 → heads.video; table in docs/checkpoints.md); the names above and model.init_ignore are Kaleido's"
}

/// The attention window behind a mis-shaped relative-position-bias table, for the import error:
/// the table has (2Wt−1)(2Wh−1)(2Ww−1) rows, so weights trained with another window do not fit,
/// and the fix is a model of that window, not another name.
enum SwinWindowNote {
    /// Kaleido's Swin models with a depth embedding, by `model.arch`, and their windows.
    static let omnivoreWindows: [(arch: Architecture, window: [Int])] = [
        (.omnivoreSwinTiny, SwinTransformer3D.Config.omnivoreTiny.window),
        (.omnivoreSwinSmall, SwinTransformer3D.Config.omnivoreSmall.window),
        (.omnivoreSwinBase, SwinTransformer3D.Config.omnivoreBase.window),
        (.omnivoreSwinCifar, SwinTransformer3D.Config.omnivoreCIFAR.window),
    ]

    /// The window (Wt, Wh, Ww), Wh = Ww as in every Swin, with Wt·Wh·Ww = `tokens` (the side of
    /// the (L, L) `relative_position_index`) and a table of `tableRows` rows; nil if none fits.
    static func window(tokens: Int, tableRows: Int) -> [Int]? {
        for side in 1...max(1, tokens) where side * side <= tokens && tokens % (side * side) == 0 {
            let time = tokens / (side * side)
            if (2 * time - 1) * (2 * side - 1) * (2 * side - 1) == tableRows { return [time, side, side] }
        }
        return nil
    }

    static func spelled(_ window: [Int]) -> String { window.map(String.init).joined(separator: "×") }

    /// A note naming the first mis-shaped table, the file's and the model's windows, and the
    /// `model.arch` whose window matches the file's (or that none does); nil when no table is mis-shaped.
    static func note(for problems: [ArenaImportError.Problem], file: SafeTensorsFile, arena: ParameterArena) -> String? {
        let tables = problems.compactMap { problem -> (key: String, model: [Int], file: [Int])? in
            guard case .shapeMismatch(let key, let model, let file) = problem, key.hasSuffix(".relative_position_bias_table") else { return nil }
            return (key, model, file)
        }
        guard let table = tables.first, table.model.count == 2, table.file.count == 2 else { return nil }
        let indexKey = table.key.replacingOccurrences(of: "relative_position_bias_table", with: "relative_position_index")
        let fileWindow = file.tensors[indexKey].flatMap { window(tokens: $0.shape.first ?? 0, tableRows: table.file[0]) }
        let modelWindow = arena.entry(named: indexKey).flatMap { window(tokens: $0.spec.torchShape.first ?? 0, tableRows: table.model[0]) }
        let which = "('\(table.key)'" + (tables.count > 1 ? " and \(tables.count - 1) more)" : ")")
        guard let fileWindow, let modelWindow else {
            return "relative position tables have \(table.file[0]) rows in the file, \(table.model[0]) in the model \(which): "
                + "the attention windows differ"
        }
        let note = "relative position tables are for an attention window of \(spelled(fileWindow)) in the file, "
            + "\(spelled(modelWindow)) in the model \(which)"
        let matching = omnivoreWindows.filter { $0.window == fileWindow }.map(\.arch.rawValue)
        if matching.isEmpty {
            let known = omnivoreWindows.map { "\($0.arch.rawValue) \(spelled($0.window))" }.joined(separator: ", ")
            return note + ". No model.arch has a \(spelled(fileWindow)) window by default (\(known)): "
                + "set model.window: [\(fileWindow.map(String.init).joined(separator: ", "))] (Omnivore's released Swin-B uses 16×7×7)"
        }
        return note + ". The file's window is that of model.arch: \(matching.joined(separator: " / "))"
            + ", or set model.window: [\(fileWindow.map(String.init).joined(separator: ", "))]"
    }
}
