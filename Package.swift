// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "layerctl",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "layerctl", targets: ["layerctl"]),
        .library(name: "LayerFS", targets: ["LayerFS"]),
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
        .target(name: "CLayerSupport", dependencies: ["CAlpm", "CSquashfs"]),
        .target(name: "Alpm", dependencies: ["CAlpm", "CLayerSupport"]),
        // System calls on raw paths, errors, digests, processes: what every target below stands on.
        .target(
            name: "LayerSupport",
            dependencies: ["CLayerSupport", .product(name: "Crypto", package: "swift-crypto")]),
        // The entry model, the manifest codec and the scan that writes it, sources of entries, and the
        // one overlay merge.
        .target(
            name: "LayerEntries",
            dependencies: ["LayerSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .target(
            name: "LayerFS",
            dependencies: [
                "LayerSupport", "LayerEntries",
                "Alpm", "CMount", "CArchive", "CSquashfs", "CLayerSupport",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .executableTarget(
            name: "layerctl",
            dependencies: [
                "LayerFS", "LayerSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "AlpmTests", dependencies: ["Alpm"]),
        .testTarget(name: "LayerEntriesTests", dependencies: ["LayerEntries", "LayerSupport"]),
        .testTarget(name: "LayerSupportTests", dependencies: ["LayerSupport", "CLayerSupport"]),
        .testTarget(name: "LayerFSTests", dependencies: ["LayerFS", "Alpm"]),
        .testTarget(
            name: "layerctlTests",
            dependencies: [
                "LayerFS", "LayerEntries", "LayerSupport", "Alpm", "CLayerSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
