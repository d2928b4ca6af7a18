import Foundation
import LayerStore
import LayerSupport
import RegistryClient

/// A registry repository as a build cache that stores share: the stack up to each layer is the
/// image tagged `layer-KEY`. A store that lacks a layer pulls it from `from` by its key instead of
/// building it; a store that built one pushes it to `to`. The cache is trusted as the store is:
/// its layers are stored under the keys and with the records it gives, each tree checked against
/// its record's digest.
public final class RegistryLayerCache {
    let store: Store
    let from: (client: RegistryClient, repository: ImageReference)?
    let to: (client: RegistryClient, repository: ImageReference)?
    let architecture: String
    let observer: (ShareEvent) -> Void
    let unpacker: any TarUnpacker

    package init(
        store: Store, from: (RegistryClient, ImageReference)?, to: (RegistryClient, ImageReference)?, architecture: String,
        unpacker: any TarUnpacker, observer: @escaping (ShareEvent) -> Void
    ) {
        self.store = store
        self.unpacker = unpacker
        self.from = from.map { (client: $0.0, repository: $0.1) }
        self.to = to.map { (client: $0.0, repository: $0.1) }
        self.architecture = architecture
        self.observer = observer
    }

    static func tag(_ key: String) -> String { "layer-" + key }

    /// Pulls layer `key` (and what it stands on) when the cache has it and `accepting` takes the
    /// record its image carries; false otherwise. A layer the build would not take (made under
    /// other builder rules) so costs no download.
    public func fetch(_ key: String, accepting: (LayerRecord) -> Bool = { _ in true }) throws -> Bool {
        guard let from else { return false }
        var reference = from.repository
        reference.tag = Self.tag(key)
        reference.digest = nil
        guard let manifest = try from.client.manifest(reference.repository, Self.tag(key)) else { return false }
        // A manifest that is no layerctl cache image's is the pull's to refuse, with its reason.
        if let record = Self.topRecord(manifest.data), !accepting(record) { return false }
        var pull = ImagePull(store: store, client: from.client, architecture: architecture, unpacker: unpacker)
        pull.trustClaims = true
        let result = try pull.pull(reference, name: nil, observer: observer)
        guard result.key == key else {
            throw RegistryError(.input, "\(reference) holds layer \(result.key), not \(key)")
        }
        return true
    }

    /// The record that a cache image's top layer carries, if the manifest is one with a record.
    static func topRecord(_ manifest: Data) -> LayerRecord? {
        guard let parsed = try? JSONDecoder().decode(OCIImage.Manifest.self, from: manifest),
            let text = parsed.layers.last?.annotations?[OCIImage.recordAnnotation]
        else { return nil }
        return try? LayerRecord.decoded(Data(text.utf8))
    }

    /// Pushes the stack up to layer `key` as `layer-KEY`.
    public func save(_ key: String) throws {
        guard let to else { return }
        var reference = to.repository
        reference.tag = Self.tag(key)
        reference.digest = nil
        _ = try ImagePush(store: store, client: to.client, architecture: architecture).push(key, to: reference, observer: observer)
    }
}
