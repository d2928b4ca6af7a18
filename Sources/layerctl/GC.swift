import ArgumentParser
import Foundation
import LayerSupport

extension LayerCtl {
    struct GC: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc",
            abstract: "Removes the layers that no name refers to.",
            discussion: "A layer is kept when a ref names it or a kept layer stands on it (`layerctl rm` removes names). Everything else is removed, along with work left by interrupted builds, the packages in the store's package cache that no kept layer installed, and the repositories' sync databases no kept layer was built with (a build downloads them again when it needs them), and the space freed is printed. Damaged store files go too: a ref that holds no key or names a missing layer, a layer whose layer.json (or an ancestor's) does not read, a manifest that does not read; with --verify, a layer whose tree is not the one its record describes. A build, pull or export makes them again. gc waits until no build or export is running.")

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Also drop the cache of compressed blocks that makes repeated exports fast.")
        var blocks = false

        @Flag(
            name: .long,
            help: "Also read every layer a name reaches and remove those whose tree is not the one recorded (with the layers on them): after a power cut, or a hand edit.")
        var verify = false

        @Flag(name: .long, help: "Remove nothing: say what would be removed, as paccache -d does.")
        var dryRun = false

        @Flag(name: .long, help: "Print what was removed as JSON.")
        var json = false

        func run() throws {
            let collected = try storeOptions.openExisting().collectGarbage(dropBlockCache: blocks, verify: verify, dryRun: dryRun)
            if json {
                try JSONOutput.print(collected)
                return
            }
            let (repaired, removed, freed, dropped) = dryRun
                ? ("would repair", "would remove", "would free", "would drop") : ("repaired", "removed", "freed", "dropped")
            for damaged in collected.damaged { print("\(repaired): \(damaged)") }
            for key in collected.layers { print("\(removed) \(key)") }
            print("\(freed) \(formatBytes(collected.bytes)) in \(counted(collected.layers.count, "layer"))")
            let packages = collected.packages.filter { !$0.hasSuffix(".sig") }.count
            if !collected.packages.isEmpty {
                print("\(freed) \(formatBytes(collected.packageBytes)) in \(counted(packages, "cached package")) no kept layer installed")
            }
            if !collected.syncDatabases.isEmpty {
                print(
                    "\(freed) \(formatBytes(collected.syncBytes)) in \(counted(collected.syncDatabases.count, "folder")) of sync "
                        + "databases no kept layer was built with")
            }
            if blocks { print("\(dropped) \(formatBytes(collected.blockCacheBytes)) of cached blocks") }
        }
    }
}
