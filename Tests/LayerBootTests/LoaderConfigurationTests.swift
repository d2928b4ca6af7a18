import LayerBoot
import Testing

/// loader.conf's `default` as systemd-boot reads it: the key ends at the first space or tab, the
/// value has the blanks around it trimmed, a `#` line is a comment, and the last one counts.
@Suite("systemd-boot's loader.conf")
struct LoaderConfigurationTests {
    @Test("default after a space or a tab, trailing blanks trimmed, comments skipped, the last one counts")
    func defaultLine() {
        #expect(BootEntries.loaderDefault("timeout 3\ndefault arch.conf\n") == "arch.conf")
        #expect(BootEntries.loaderDefault("default\tarch.conf \t\n") == "arch.conf")
        #expect(BootEntries.loaderDefault("  default  layerctl-*  \n") == "layerctl-*")
        #expect(BootEntries.loaderDefault("# default arch.conf\ntimeout 3\n") == nil)
        #expect(BootEntries.loaderDefault("default a.conf\ndefault \t \ndefault\tb.conf\n") == "b.conf")
        #expect(BootEntries.loaderDefault("defaults a.conf\n") == nil)
    }
}
