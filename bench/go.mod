module taskstream/bench

go 1.26
