import ArgumentParser
import Foundation
import LayerExport
import LayerShare
import LayerStore
import LayerSupport
import SquashfsImage

extension LayerCtl {
    struct Export: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "export",
            abstract: "Writes a built layer and those below it as one squashfs image.",
            discussion: """
                With --format tar or dir, the same merge is written as a pax tarball or a directory instead. \
                With --format oci, the stack is written as an OCI image layout (a directory), one OCI layer per \
                layer, tagged with the layer's name, as skopeo copies to a registry and umoci unpacks. \
                The layers are merged with overlayfs's rules in user space: the topmost entry of a name wins, \
                whiteouts and opaque directories hide what is below them. The image is written to a temporary \
                file and moved to OUTPUT only when it is complete, so OUTPUT holds either the previous image or the \
                new one. The same layers and options always give the same bytes.
                """)

        @Argument(help: "A layer file name, a full key, a unique prefix of a key, or an image reference to pull.")
        var layer: String

        @OptionGroup var image: ImageArguments

        @OptionGroup(title: "Registry") var registryArguments: RegistryArguments

        @Flag(name: [.long, .customLong("json-result")], help: "Print the export's result as one JSON object.")
        var json = false

        @OptionGroup var storeOptions: StoreOptions

        func validate() throws {
            if image.output == nil { throw ValidationError("export needs -o OUTPUT, the file to write") }
        }

        func run() throws {
            guard let output = image.output else { throw ValidationError("export needs -o OUTPUT, the file to write") }
            let store = try storeOptions.open()
            let options = image.format == "squashfs" ? try image.imageOptions() : nil
            let source = try registryArguments.source(layer, in: store, json: json, options: options)
            try image.export(
                store: store, key: source.key, asked: layer, output: output, json: json, knownBlocks: source.knownBlocks)
        }
    }
}

/// The options of `export`, which `build -o` shares.
struct ImageArguments: ParsableArguments {
    @Option(name: [.short, .customLong("output")], help: "The file (or, with --format dir or oci, the directory) to write.")
    var output: String?

    @Option(help: "squashfs (the default), tar (pax, through libarchive), dir, or oci (an OCI image layout).")
    var format: String = "squashfs"

    @Option(help: "zstd[:LEVEL], xz[:LEVEL], gzip[:LEVEL] or lz4[:hc]. The default, zstd:15, suits boot images.")
    var compression: String = ImageOptions.defaultCompression

    @Option(help: "The squashfs block size: a power of two from 4K to 1M, such as 128K (the default) or 1M.")
    var blockSize: String?

    @Option(help: "Compression workers. The default is one per core; the image is the same for any number.")
    var jobs: Int?

    @Flag(help: "Neither use nor fill the store's cache of compressed blocks.")
    var noBlockCache = false

    @Option(
        help:
            "How large the store's cache of compressed blocks may grow, such as 4G (the default) or 512M; the least recently used blocks go first. LAYERCTL_BLOCK_CACHE_SIZE sets it too."
    )
    var blockCacheSize: String?

    func validate() throws {
        guard Exporter.Format(rawValue: format) != nil || format == "oci" else {
            throw ValidationError("unknown format '\(format)'; use squashfs, tar, dir or oci")
        }
        if format == "oci" && ociCompression == nil {
            throw ValidationError("--format oci compresses its layers with zstd (the default) or gzip, not '\(compression)'")
        }
        do { _ = try ImageOptions(compression: compression, blockSize: blockSize, jobs: jobs) } catch {
            throw ValidationError("\(error)")
        }
        do { _ = try blockCacheLimit() } catch { throw ValidationError("\(error)") }
        // Said before anything is built or exported; the writers refuse it again.
        if let output {
            let (target, special) = FileSystem.outputTarget(output)
            if let special {
                throw ValidationError(RefusedOutput(output, is: special, what: format == "dir" || format == "oci" ? "a folder export" : "an image").message)
            }
            // A mistyped folder, said before a build of minutes rather than after it.
            let isFolder = format == "dir" || format == "oci"
            if !isFolder && output.hasSuffix("/") {
                throw ValidationError("cannot write \(output): a \(format) image is a file, and a name that ends in / is a folder's")
            }
            let folder = FileSystem.split(FileSystem.trimmingTrailingSlashes(target)).directory
            var st = stat()
            if stat(folder, &st) != 0 {
                throw ValidationError("cannot write \(output): there is no folder \(folder)")
            } else if st.st_mode & S_IFMT != S_IFDIR {
                throw ValidationError("cannot write \(output): \(folder) is no folder")
            }
        }
    }

    /// `--block-cache-size`, else `LAYERCTL_BLOCK_CACHE_SIZE`, else the default.
    func blockCacheLimit() throws -> BlockCacheLimit {
        guard let text = blockCacheSize ?? ProcessInfo.processInfo.environment["LAYERCTL_BLOCK_CACHE_SIZE"] else {
            return .default
        }
        return BlockCacheLimit(bytes: try ImageOptions.parseSize(text, what: "block cache size"))
    }

    /// Exports `key` to `output` and prints the result: a line of text, or with `json` the result
    /// as one JSON object (inside `{"image": …}` with `inside`).
    func imageOptions() throws -> ImageOptions { try ImageOptions(compression: compression, blockSize: blockSize, jobs: jobs) }

    /// Exports `key`; `knownBlocks` come from the pull that stored it, when one just did.
    func export(
        store: Store, key: String, asked: String? = nil, output: String, json: Bool, inside: Bool = false,
        knownBlocks: BlockDigests? = nil
    ) throws {
        // `-o out/` names the folder `out` that a dir or oci export makes.
        let output = FileSystem.trimmingTrailingSlashes(output)
        if format == "oci" {
            try exportLayout(store: store, key: key, asked: asked ?? key, output: output, json: json, inside: inside)
            return
        }
        let options = try imageOptions()
        let request = Exporter.Request(
            format: Exporter.Format(rawValue: format) ?? .squashfs, output: output, options: options,
            useBlockCache: !noBlockCache, blockCacheLimit: try blockCacheLimit(), knownBlocks: knownBlocks)
        let reporter = ExportReporter()
        let result = try Exporter(store: store).export(
            key, request, progress: reporter.progress, warning: reporter.warning)
        reporter.finish()
        if json {
            try inside ? JSONOutput.print(["image": result]) : JSONOutput.print(result)
            return
        }
        var line = "wrote \(output): \(formatBytes(Int64(result.bytesOut)))"
        if request.format == .squashfs {
            line += " from \(formatBytes(Int64(result.bytesIn))) of file data in \(counted(result.entries, "entry", plural: "entries"))"
            line += ", \(options.compressionName), \(String(format: "%.2f", result.seconds)) s"
            if request.useBlockCache {
                line += ", \(counted(result.cacheMisses, "block")) compressed, \(result.cacheHits) from cache"
            }
            if result.zeroBlocks > 0 { line += ", \(result.zeroBlocks) of zeros" }
        }
        print(line)
    }
}

/// Draws the export's progress on a terminal: bytes in, bytes out, ratio and time left.
final class ExportReporter: @unchecked Sendable {
    // @unchecked: the exporter calls `progress` from the thread that runs the export only.
    private let terminal = isatty(STDERR_FILENO) == 1
    private let started = Date()
    private let statusLine = StatusLine()

    func progress(_ progress: Exporter.Progress) {
        guard terminal else { return }
        let fraction = progress.totalIn > 0 ? Double(progress.bytesIn) / Double(progress.totalIn) : 1
        let elapsed = Date().timeIntervalSince(started)
        let eta = fraction > 0.01 ? elapsed * (1 - fraction) / fraction : 0
        var text = StatusLine.bar(fraction) + " "
        text += "\(formatBytes(Int64(progress.bytesIn))) / \(formatBytes(Int64(progress.totalIn))) in"
        if progress.bytesOut > 0 {
            text += ", \(formatBytes(Int64(progress.bytesOut))) out"
            if let ratio = progress.ratio { text += String(format: ", ratio %.2f", ratio) }
        }
        text += String(format: ", %.0f s left", eta)
        statusLine.show(text)
    }

    func warning(_ text: String) {
        finish()
        printNote("warning: \(text)")
    }

    func finish() { statusLine.clear() }
}

extension ImageArguments {
    /// The layers' compression for `--format oci`: the algorithm of `--compression`, zstd or gzip.
    var ociCompression: OCICompression? {
        if compression == ImageOptions.defaultCompression { return .zstd }
        return OCICompression(rawValue: String(compression.prefix { $0 != ":" }))
    }

    func exportLayout(store: Store, key: String, asked: String, output: String, json: Bool, inside: Bool) throws {
        var layout = OCIImageLayout(store: store, architecture: machineArchitecture())
        layout.compression = ociCompression ?? .zstd
        let lock = try store.lock(.shared)
        defer { lock.unlock() }
        let result = try layout.write(key, to: output, tag: try store.name(of: key, asked: asked))
        for skipped in result.skippedAttributes.prefix(1) {
            FileHandle.standardError.write(Data("layerctl: warning: tar cannot carry some attribute names; left out \(result.skippedAttributes.count), first \(skipped)\n".utf8))
        }
        if json {
            try inside ? JSONOutput.print(["image": result]) : JSONOutput.print(result)
            return
        }
        print("wrote \(output): an OCI image layout of \(counted(result.layers.count, "layer")), manifest \(result.manifestDigest)")
    }
}
