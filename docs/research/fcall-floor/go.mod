module fcallfloor

go 1.26.0
