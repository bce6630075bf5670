// `swift run -c release train-cifar --genotype PC_DARTS_cifar`: a genotype trained from scratch.
// The logic lives in SearchCommands (TrainCommand) so that it is tested; this file only hands
// over the arguments.

import Foundation
import SearchCommands

setlinebuf(stdout)
exit(TrainCommand.main(Array(CommandLine.arguments.dropFirst())))
