"""Sizes of the tiny zoo models the exits tests build (small enough to export in about a second)."""

# name -> (input shape, channel widths)
TINY = {
    "b-lenet": ((1, 16, 16), (4, 8, 16)),
    "b-alexnet": ((1, 16, 16), (4, 8, 8, 8, 8, 16)),
    "b-resnet": ((3, 16, 16), (4, 8, 8)),
}
