import Alpm
import LayerBuilder
import LayerRecipe
import LayerShare

extension LayerCtl {
    /// What `--version` prints: the versions that decide what a store's layers and locks are to
    /// this layerctl (a key of another format is another key; a layer made under other builder
    /// rules is built again, one pulled under other unpack rules pulled again; a lock of another
    /// format is refused), and the libalpm that reads the packages.
    static var versionText: String {
        "layerctl with layer key format \(LayerSpec.formatVersion), builder rules \(BuilderRules.version), "
            + "unpack rules \(ImagePull.unpackRules), lock format \(LockFile.formatVersion); libalpm \(AlpmHandle.version)"
    }
}
