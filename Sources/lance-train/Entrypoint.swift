import LanceCLI

@main
struct Entrypoint {
    static func main() {
        relaunchWithSupportedBLASKernels()
        TrainCommand.main()
    }
}
