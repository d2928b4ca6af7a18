import ArgumentParser
import Foundation
import LayerBuilder
import LayerShare
import LayerStore
import LayerSupport
import RegistryClient
import SquashfsImage

/// How a command reaches registries: the default registry for short names, and plain HTTP.
struct RegistryArguments: ParsableArguments {
    @Option(
        help:
            "The registry of a reference without one (steve/gaming). It defaults to $LAYERCTL_REGISTRY, else Docker Hub."
    )
    var registry: String?

    @Flag(help: "Speak plain HTTP to the registry. A registry on this machine gets it when it does not speak TLS.")
    var insecure = false

    func reference(_ text: String) throws -> ImageReference {
        let fallback = registry ?? ProcessInfo.processInfo.environment["LAYERCTL_REGISTRY"] ?? ImageReference.dockerHub
        return try ImageReference(parsing: text, defaultRegistry: fallback)
    }

    /// Pulls `text` into `store` (the ref `name`, or none) and says so unless `quiet` or `json`;
    /// with `blockSize`, takes the digests of the unpacked files' blocks of that size on the way.
    @discardableResult
    func pull(
        _ text: String, store: Store, name: String?, json: Bool, quiet: Bool = false, blockSize: Int? = nil,
        overlapTopCommit: Bool = false
    ) throws -> ImagePull.Result {
        let reference = try reference(text)
        let reporter = ShareReporter(json: json || quiet)
        var pull = ImagePull(store: store, client: try client(for: reference, reporter: reporter), architecture: machineArchitecture(),
            unpacker: TarUnpackWork())
        pull.blockSize = blockSize
        pull.overlapTopCommit = overlapTopCommit
        let result = try pull.pull(reference, name: name, observer: reporter.event)
        reporter.finish()
        if !json && !quiet {
            let fetched = result.layers.filter { $0.pull == "stored" }
            print(
                "pulled \(result.reference)\(result.name.map { " as \($0)" } ?? "") (\(result.key.prefix(12))): "
                    + "\(counted(result.layers.count, "layer")), \(fetched.count) downloaded "
                    + "(\(formatBytes(fetched.reduce(0) { $0 + $1.size }))), \(result.layers.count - fetched.count) already stored")
        }
        return result
    }

    /// The key `operand` names: a layer of the store, or an image reference, pulled first. For an
    /// export with `options` to follow, a pull takes the digests of the blocks it unpacks, so that
    /// the export reads none that the block cache holds. With `overlapCommit`, a pulled top layer
    /// may still be on its way into the store (`committing`): the caller exports it from where it
    /// is and finishes the commit.
    func source(
        _ operand: String, in store: Store, json: Bool, options: ImageOptions?, overlapCommit: Bool = false
    ) throws -> (key: String, knownBlocks: BlockDigests?, committing: ImagePull.TopCommit?) {
        guard ImageReference.looksLikeReference(operand) else { return (try store.resolve(operand), nil, nil) }
        // What the export can do before the pulled layer is there is done while the pull downloads.
        if let options { _ = Background { SquashfsWriter.prepareBlockCache(options) } }
        let pulled = try pull(
            operand, store: store, name: nil, json: json, quiet: json, blockSize: options.map { Int($0.blockSize) },
            overlapTopCommit: overlapCommit)
        return (pulled.key, pulled.knownBlocks, pulled.committing)
    }

    func client(for reference: ImageReference, reporter: ShareReporter) throws -> RegistryClient {
        var options = RegistryOptions()
        options.insecure = insecure
        if let folder = ProcessInfo.processInfo.environment["LAYERCTL_CERTS_DIR"], !folder.isEmpty {
            options.certificateFolders.insert(folder, at: 0)
        }
        let client = try RegistryClient(reference, options: options)
        client.onRetry = reporter.retry
        return client
    }
}

/// The OCI name of this machine's architecture.
func machineArchitecture() -> String {
    var uts = utsname()
    uname(&uts)
    let machine = withUnsafeBytes(of: &uts.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    return OCIImageLayout.architecture(machine: machine)
}

extension LayerCtl {
    struct Push: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "push",
            abstract: "Pushes a layer and those below it to a registry as one OCI image.",
            discussion: """
                One OCI layer per layer, a pax tar compressed with zstd (or gzip), root first; the image config \
                carries each layer's name, key and packages. The same stack gives the same digests from any \
                machine. Blobs the repository has are not sent again, and a layer pushed before is not even \
                compressed again. Credentials come from $REGISTRY_AUTH_FILE, else ~/.docker/config.json.
                """)

        @Argument(help: "A layer file name, a full key, or a unique prefix of a key.")
        var layer: String

        @Argument(help: "Where to push: [REGISTRY/]REPOSITORY[:TAG], such as localhost:5000/steve/gaming:latest.")
        var reference: String

        @Option(help: "zstd (the default) or gzip, for clients older than zstd layers.")
        var compression: String = "zstd"

        @Option(help: "Another repository of the same registry to mount blobs from instead of uploading them.")
        var mountFrom: String?

        @OptionGroup var registryArguments: RegistryArguments

        @Flag(help: "Print the result as one JSON object.")
        var json = false

        @OptionGroup var storeOptions: StoreOptions

        func validate() throws {
            if OCICompression(rawValue: compression) == nil {
                throw ValidationError("--compression is zstd or gzip for a push, not '\(compression)'")
            }
        }

        func run() throws {
            let store = try storeOptions.openExisting()
            let reference = try registryArguments.reference(reference)
            let reporter = ShareReporter(json: json)
            let lock = try store.lock(.shared)
            defer { lock.unlock() }
            let key = try store.resolve(layer)
            var push = ImagePush(
                store: store, client: try registryArguments.client(for: reference, reporter: reporter),
                architecture: machineArchitecture())
            push.compression = OCICompression(rawValue: compression) ?? .zstd
            push.mountFrom = mountFrom
            let result = try push.push(key, to: reference, observer: reporter.event)
            reporter.finish()
            if json { return try JSONOutput.print(result) }
            let sent = result.layers.filter { $0.upload == "uploaded" }
            print(
                "pushed \(result.reference)@\(result.manifestDigest): \(counted(result.layers.count, "layer")), "
                    + "\(sent.count) uploaded (\(formatBytes(sent.reduce(0) { $0 + $1.size }))), "
                    + "\(result.layers.count - sent.count) already there")
        }
    }

    struct Pull: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "pull",
            abstract: "Pulls an image from a registry into the store.",
            discussion: """
                Its layers can then be exported, staged or built upon. Only the layers the store lacks are downloaded; each is checked against its digest as it streams, \
                unpacked (a tar entry that would reach out of the layer is refused, and nothing is stored), and \
                stored whole or not at all. The image's top layer gets the ref NAME: --name, else the repository's \
                last component. `layerctl inspect NAME` shows where each layer came from.
                """)

        @Argument(help: "What to pull: [REGISTRY/]REPOSITORY[:TAG|@DIGEST], such as localhost:5000/steve/gaming.")
        var reference: String

        @Option(help: "The ref name of the image's top layer; the repository's last component by default.")
        var name: String?

        @OptionGroup var registryArguments: RegistryArguments

        @Flag(help: "Print the result as one JSON object.")
        var json = false

        @OptionGroup var storeOptions: StoreOptions

        func run() throws {
            try NamespacedWork.requireHost("layerctl pull")
            let store = try storeOptions.open()
            let parsed = try registryArguments.reference(reference)
            let name = name ?? parsed.shortName
            let result = try registryArguments.pull(reference, store: store, name: name, json: json)
            if json { try JSONOutput.print(result) }
        }
    }
}

/// Tells of a push or a pull: a byte bar on a terminal, a line per layer otherwise; with --json,
/// nothing but the result (and retries on stderr).
final class ShareReporter {
    private let terminal = isatty(STDERR_FILENO) == 1
    private let json: Bool
    private let statusLine = StatusLine()
    private var bytes: [String: Int64] = [:]

    init(json: Bool) { self.json = json }

    func event(_ event: ShareEvent) {
        switch event.kind {
        case .bytes:
            bytes[event.layer, default: 0] += event.bytes
            guard terminal, !json else { return }
            let done = bytes[event.layer] ?? 0
            let fraction = event.total > 0 ? Double(done) / Double(event.total) : 1
            statusLine.show(
                "\(StatusLine.bar(fraction)) \(event.layer): \(event.detail) \(formatBytes(done)) / \(formatBytes(event.total))")
        case .step:
            guard terminal, !json else { return }
            statusLine.show("\(event.layer): \(event.detail)")
        case .layer:
            guard !json else { return }
            statusLine.clear()
            FileHandle.standardError.write(Data((RawPath.printableLine("\(event.layer): \(event.detail)") + "\n").utf8))
        }
    }

    /// A retry is coming: said even with --json, on stderr.
    func retry(_ text: String) {
        statusLine.clear()
        printNote(text)
    }

    func finish() { statusLine.clear() }
}
