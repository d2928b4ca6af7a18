// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "layerctl",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "layerctl", targets: ["layerctl"]),
        .library(
            name: "LayerFS",
            targets: [
                "LayerSupport", "LayerEntries", "LayerRecipe", "LayerStore", "SquashfsImage", "LayerBuilder", "LayerDiff",
                "LayerSBOM", "LayerCheck", "LayerExport", "LayerShare", "RegistryClient", "LayerBoot",
            ]),
        .library(name: "Alpm", targets: ["Alpm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(
            name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(
            name: "CSquashfs", pkgConfig: "libsquashfs1", providers: [.apt(["libsquashfs-dev"])]),
        .systemLibrary(
            name: "CMount", pkgConfig: "mount", providers: [.apt(["libmount-dev"])]),
        .systemLibrary(
            name: "CAlpm", pkgConfig: "libalpm",
            providers: [.apt(["libalpm-dev", "libcurl4-openssl-dev", "libgpgme-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // The C side of LayerSupport and the builder: what Swift cannot call (macros, va_list,
        // fork-to-exec code) and the build's seccomp filter, made with libseccomp (libseccomp-dev).
        .target(name: "CLayerSupport", dependencies: ["CAlpm", "CArchive", "CSquashfs"], linkerSettings: [.linkedLibrary("seccomp")]),
        .target(name: "Alpm", dependencies: ["CAlpm", "CArchive", "CLayerSupport", "LayerSupport"]),
        // System calls on raw paths, errors, digests, processes: what every target below stands on.
        .target(
            name: "LayerSupport",
            dependencies: ["CLayerSupport", "CMount", .product(name: "Crypto", package: "swift-crypto")]),
        // The entry model, the manifest codec and the scan that writes it, sources of entries, and the
        // one overlay merge.
        .target(
            name: "LayerEntries",
            dependencies: ["LayerSupport", "CLayerSupport", .product(name: "Crypto", package: "swift-crypto")]),
        // The layer file and the layer key: what a build is asked for, and the name it is stored under.
        .target(
            name: "LayerRecipe",
            dependencies: [
                "LayerSupport", "LayerEntries", "LayerStore", "Alpm", "RegistryClient", .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // The content-addressed store: layer trees, their records and manifests, refs, locks, gc.
        .target(name: "LayerStore", dependencies: ["LayerEntries", "LayerSupport", "Alpm"]),
        // The squashfs writer (with its block cache) and reader; knows entries, not layers.
        .target(
            name: "SquashfsImage",
            dependencies: [
                "LayerEntries", "LayerSupport", "CSquashfs", "CLayerSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // Building a stack: the planner, the namespaced child that runs libalpm, `run:` and `files:`,
        // and the throwaway root of `layerctl shell`.
        .target(
            name: "LayerBuilder",
            dependencies: [
                "LayerRecipe", "LayerStore", "LayerEntries", "LayerShare", "LayerSupport", "Alpm", "CLayerSupport", "CArchive",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // `layerctl diff`: two sides (layers, images, folders) and what differs, packages first.
        .target(
            name: "LayerDiff", dependencies: ["LayerStore", "SquashfsImage", "LayerEntries", "LayerSupport", "Alpm"]),
        // Bills of materials of a stack (SPDX 2.3, CycloneDX 1.5): read from the store, written as JSON.
        .target(name: "LayerSBOM", dependencies: ["LayerStore", "LayerDiff", "LayerSupport"]),
        // `build --check`: a recipe built twice under different conditions, trees and images compared.
        .target(
            name: "LayerCheck",
            dependencies: ["LayerBuilder", "LayerDiff", "LayerExport", "LayerRecipe", "LayerStore", "SquashfsImage", "LayerSupport"]),
        // Writing a stack out: squashfs, tar or a folder, replaced atomically.
        .target(
            name: "LayerExport",
            dependencies: ["LayerStore", "SquashfsImage", "LayerEntries", "LayerSupport", "CArchive", "CLayerSupport"]),
        // The OCI distribution protocol over libcurl: image references, credentials, tokens, manifests
        // and blobs. Speaks to registries and reads the Docker credentials file; touches nothing else.
        .target(
            name: "RegistryClient",
            dependencies: ["CCurl", "LayerSupport", .product(name: "Crypto", package: "swift-crypto")]),
        // Sharing through OCI registries: layers as OCI layer blobs, written and unpacked; push and pull.
        .target(
            name: "LayerShare",
            dependencies: [
                "RegistryClient", "LayerExport", "LayerStore", "LayerEntries", "LayerSupport", "CArchive", "CLayerSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // The machine side: staging images and boot entries, `changes`, and QEMU.
        .target(
            name: "LayerBoot",
            dependencies: [
                "LayerDiff", "LayerStore", "SquashfsImage", "LayerEntries", "LayerSupport", "Alpm",
                .product(name: "Yams", package: "Yams"),
            ]),
        .executableTarget(
            name: "layerctl",
            dependencies: [
                "Alpm", "LayerRecipe", "LayerStore", "LayerBuilder", "LayerDiff", "LayerSBOM", "LayerCheck", "LayerExport", "LayerShare", "RegistryClient",
                "LayerBoot", "SquashfsImage", "LayerEntries", "LayerSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "AlpmTests", dependencies: ["Alpm"]),
        .testTarget(name: "LayerEntriesTests", dependencies: ["LayerEntries", "LayerSupport"]),
        .testTarget(
            name: "LayerSupportTests",
            dependencies: ["LayerSupport", "CLayerSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "LayerRecipeTests", dependencies: ["LayerRecipe", "Alpm"]),
        .testTarget(name: "LayerBootTests", dependencies: ["LayerBoot", "LayerSupport"]),
        .testTarget(
            name: "SquashfsImageTests",
            dependencies: [
                "SquashfsImage", "LayerEntries", "LayerSupport", .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .testTarget(
            name: "layerctlTests",
            dependencies: [
                "LayerRecipe", "LayerStore", "LayerBuilder", "LayerDiff", "LayerExport", "LayerBoot", "LayerShare",
                "RegistryClient", "SquashfsImage", "LayerEntries", "LayerSupport", "Alpm", "CLayerSupport", "CArchive",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
