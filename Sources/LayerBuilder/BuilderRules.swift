import LayerStore

/// The version of the rules by which the builder turns a layer's inputs into its tree: what the
/// normaliser keeps, removes and writes, and what the builder child does around libalpm's
/// transaction. The layer key names the inputs; this names what is done with them. A layer's
/// record keeps the version it was made under (`LayerRecord.rules`), and a stored layer made
/// under another one does not serve a build: it is built again, and so are the layers above it,
/// whose records are as old. So a layerctl that makes better trees makes them for the layers a
/// store already holds, while keys, and the `parent` lines of locks, stay what they were.
///
/// Bump it whenever the builder would make a different tree from the same inputs.
///
/// - 1: records written before the version was kept (they have none).
/// - 2: `/etc/machine-id` is left empty, not `uninitialized` (with it, every boot of an image was
///   systemd's first); a layer that changes /usr in a stack with systemd gets `/etc/.updated` and
///   `/var/.updated`; the layer's folders have their settled times before the post-transaction
///   hooks run (fontconfig's caches stay valid).
/// - 3: a locked account's last password change of day 0 in `/etc/shadow` (systemd-sysusers under
///   `SOURCE_DATE_EPOCH` 0) is left empty, so PAM lets su, sudo and cron into it.
public enum BuilderRules {
    public static let version = 3

    /// The version a record says, 1 for a record written before versions were kept.
    static func version(of rules: Int?) -> Int { rules ?? 1 }

    /// What a layer's record says of rules other than these ("made by another layerctl, …"), or
    /// nil when it was made under these.
    static func otherRules(of record: LayerRecord) -> String? {
        let rules = version(of: record.rules)
        guard rules != version else { return nil }
        return "made by another layerctl, under builder rules \(rules); this one's rules, \(version), make some trees otherwise"
    }
}
