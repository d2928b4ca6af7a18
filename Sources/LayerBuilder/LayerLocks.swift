import Alpm
import Foundation
import LayerRecipe
import LayerSupport

/// How a build treats the locks beside the layer files (`NAME.lock`, see `LockFile`).
public enum LockPolicy: Sendable, Equatable {
    /// `build`: each lock there is holds. One whose layer file changed is rewritten, keeping every
    /// package it pinned that the change leaves alone; a missing lock is not written.
    case follow
    /// `build --check`: each lock there is holds, as with `follow`, and nothing is written.
    case hold
    /// `build --locked`: every layer has a lock that matches its layer file, and the packages
    /// resolve to what it pins; nothing is written.
    case locked
    /// `lock`: every layer's lock is written. Packages it pinned hold, except those `update` lets
    /// move: all of them, or the named ones with what they need.
    case write(update: LockUpdate)
}

public enum LockUpdate: Sendable, Equatable {
    case none
    case all
    case packages(Set<String>)
}

/// Holds one layer's resolution against its lock, as `LockPolicy` says.
struct LayerLock {
    let policy: LockPolicy
    let layer: LayerFile
    let path: String
    let existing: LockFile?
    let current: LockFile

    init(policy: LockPolicy, layer: LayerFile, current: LockFile) throws {
        self.policy = policy
        self.layer = layer
        self.current = current
        path = LockFile.path(for: layer.path)
        existing = try LockFile.read(path)
    }

    /// Whether the lock was made from the inputs the layer file has now.
    var isFresh: Bool {
        guard let existing else { return false }
        return existing.arch == current.arch && existing.parent == current.parent && existing.inputs == current.inputs
    }

    /// Throws when the resolution breaks the lock; returns the lock to write once the build is
    /// done, or nil. `closure` gives the packages that may move with the named ones.
    func settle(closure: (Set<String>) throws -> Set<String>) throws -> LockFile? {
        switch policy {
        case .locked:
            guard let existing else {
                throw BuildFailure(
                    "layer \(layer.name) has no lock (\(path)); --locked builds only what is locked: write it with `layerctl lock \(layer.path)`",
                    at: layer.path, code: .input)
            }
            guard isFresh else {
                throw BuildFailure(
                    "the lock of layer \(layer.name) is stale: " + existing.inputDifferences(from: current).joined(separator: "; ")
                        + "; update it with `layerctl lock \(layer.path)`",
                    at: staleLocation(existing), code: .input)
            }
            try hold(existing, moving: [])
            return nil
        case .follow, .hold:
            guard let existing else { return nil }
            try hold(existing, moving: [])
            return isFresh && existing == current || policy == .hold ? nil : current
        case .write(let update):
            if let existing {
                switch update {
                case .all: break
                case .none: try hold(existing, moving: [])
                case .packages(let names): try hold(existing, moving: try closure(names))
                }
            }
            return existing == current ? nil : current
        }
    }

    /// Every package the lock pins that the resolution installs too is the pinned file, unless it
    /// is one of `moving`. When the lock is fresh, the resolution installs exactly what it pins.
    private func hold(_ lock: LockFile, moving: Set<String>) throws {
        let now = Dictionary(current.packages.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for pinned in lock.packages where !moving.contains(pinned.name) {
            guard let resolved = now[pinned.name] else {
                if isFresh {
                    throw failure(
                        "the lock pins \(pinned.name) \(pinned.version), which the layer no longer installs", package: pinned.name)
                }
                continue
            }
            guard resolved != pinned else { continue }
            if resolved.version == pinned.version && resolved.filename == pinned.filename {
                throw failure(
                    "repository \(resolved.repository) offers \(pinned.name) \(pinned.version) with sha256 \(resolved.sha256.prefix(12))…, not the file the lock pins (\(pinned.sha256.prefix(12))…): the file changed under the same name",
                    package: pinned.name)
            }
            if resolved.version == pinned.version && resolved.repository == pinned.repository {
                throw failure(
                    "the lock pins \(pinned.name) \(pinned.version) from \(pinned.repository) as the file \(pinned.filename), and the repository offers it as \(resolved.filename): write the lock again with `layerctl lock --update \(layer.path) \(pinned.name)`",
                    package: pinned.name)
            }
            throw failure(
                "the lock pins \(pinned.name) \(pinned.version) from \(pinned.repository), and the repositories now resolve it to \(resolved.version) from \(resolved.repository); pin them with `snapshot:`, or move it with `layerctl lock --update \(layer.path) \(pinned.name)`",
                package: pinned.name)
        }
        if isFresh {
            let pinned = Set(lock.packages.map(\.name))
            if let extra = current.packages.first(where: { !pinned.contains($0.name) && !moving.contains($0.name) }) {
                throw failure(
                    "the layer now resolves to \(extra.name) \(extra.version), which the lock does not pin; move the lock with `layerctl lock --update \(layer.path)`",
                    package: nil)
            }
        }
    }

    private func failure(_ message: String, package: String?) -> BuildFailure {
        let line = package.flatMap { package in
            lockLine { words in words.count == 6 && words[0] == "package" && words[2] == package }
        }
        return BuildFailure(message, at: location(line: line ?? 1), code: .input, packages: package.map { [$0] } ?? [])
    }

    /// Where a stale lock first differs from its layer file: the layer file's entry that the lock
    /// does not have, else the lock's line that no longer holds.
    private func staleLocation(_ lock: LockFile) -> String {
        if let gained = layer.packages.first(where: { !lock.inputs.install.contains($0.value) }) {
            return gained.location.description
        }
        if let removal = layer.remove.first(where: { !lock.inputs.remove.contains($0.value) }) {
            return removal.location.description
        }
        if lock.arch != current.arch, let arch = layer.arch { return arch.location.description }
        if let changed = current.inputs.repositories.first(where: { !lock.inputs.repositories.contains($0) }),
            let spec = layer.repos.first(where: { $0.name == changed.name })
        {
            return spec.location.description
        }
        let line =
            lockLine { $0.count == 2 && $0[0] == "install" && !current.inputs.install.contains(String($0[1])) }
            ?? lockLine { $0.count == 2 && $0[0] == "remove" && !current.inputs.remove.contains(String($0[1])) }
            ?? lockLine { $0.first == "arch" && lock.arch != current.arch }
            ?? lockLine { $0.first == "parent" && lock.parent != current.parent }
            ?? lockLine { $0.first == "repo" }
        return location(line: line ?? 1)
    }

    private func location(line: Int) -> String { FileLocation(file: path, line: line, column: 1).description }

    /// The first line of the lock whose words match.
    private func lockLine(where matches: ([Substring]) -> Bool) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.firstIndex { matches($0.split(separator: " ")) }.map { $0 + 1 }
    }
}

extension LockFile.Package {
    init(_ file: PackageFile) {
        self.init(repository: file.repository, name: file.name, version: file.version, filename: file.filename, sha256: file.sha256)
    }
}
