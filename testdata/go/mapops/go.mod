module mapops

go 1.19
