import Foundation
import LayerSupport

/// The images pulled into a store, each by the reference it was pulled by (a tag, or a digest) and
/// by its digest alone: the manifest that reference resolved to and the top layer's key, as of its
/// last pull. A `from:` image is resolved at the registry at each build; `build --offline` takes
/// it from here. A cache: a pull that cannot write it still pulls, and gc removes the notes of
/// images it removed.
extension Store {
    public struct PulledImage: Codable, Sendable, Equatable {
        /// The reference as pulled (`ghcr.io/steve/base:v1`).
        public var reference: String
        /// With the digest it resolved to (`ghcr.io/steve/base:v1@sha256:…`).
        public var resolved: String
        public var manifestDigest: String
        /// The image's top layer.
        public var key: String

        public init(reference: String, resolved: String, manifestDigest: String, key: String) {
            self.reference = reference
            self.resolved = resolved
            self.manifestDigest = manifestDigest
            self.key = key
        }
    }

    /// `cache/images`: a file for each reference, named by its digest.
    public var pulledImagesDirectory: String { cacheDirectory + "/images" }

    private func pulledImagePath(_ reference: String) -> String {
        pulledImagesDirectory + "/" + Digest.sha256(Data(reference.utf8)).prefix(32) + ".json"
    }

    /// Notes that `image.reference` resolved to `image` now.
    public func notePulled(_ image: PulledImage) throws {
        try FileSystem.makeDirectories(pulledImagesDirectory)
        try FileSystem.writeAtomically(try JSONEncoder().encode(image), to: pulledImagePath(image.reference))
    }

    /// What `reference` resolved to at its last pull, while the store holds its top layer.
    public func pulledImage(_ reference: String) -> PulledImage? {
        let path = pulledImagePath(reference)
        guard FileSystem.exists(path), let data = try? FileSystem.readRegularFile(path, atMost: 64 << 10),
            let image = try? JSONDecoder().decode(PulledImage.self, from: data), image.reference == reference,
            contains(image.key)
        else { return nil }
        return image
    }
}
