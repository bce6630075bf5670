// `swift run -c release search-cifar --help`: the PC-DARTS search. The logic lives in the
// PCDARTS library (SearchCommand) so that it is tested; this file only hands over the arguments.

import Foundation
import SearchCommands

setlinebuf(stdout)
exit(SearchCommand.main(Array(CommandLine.arguments.dropFirst())))
