/// `boot:` in a layer file: the initramfs generator of the image, whose hook layerctl installs,
/// enables and runs whenever a layer changes the kernel, the hook or the generator's configuration.
/// Children inherit it.
public enum BootFlavour: String, Codable, Sendable, CaseIterable {
    case mkinitcpio
    case dracut
}
