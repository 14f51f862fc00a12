module github.com/stepup-dev/stepup

go 1.26.8
