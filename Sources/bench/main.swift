// `swift run -c release bench --K 1,2,4,8`: memory and throughput per K. The logic lives in the
// PCDARTS library (BenchCommand); this file only hands over the arguments.

import Foundation
import SearchCommands

setlinebuf(stdout)
exit(BenchCommand.main(Array(CommandLine.arguments.dropFirst())))
