"""Reading what publishers ship: archives (tar, zip, nested), compressed streams, IDX and MAT files.

Everything here treats its input as hostile (it came from the internet) and reports bad input
as an error naming the file and what was wrong.
"""
