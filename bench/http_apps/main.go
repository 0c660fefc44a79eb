// A TechEmpower-shaped Go net/http server for bench/bench_http.py:
//
//	GOMAXPROCS=N tfb_go HOST:PORT
//
// /plaintext answers "Hello, World!" (text/plain), /json
// {"message":"Hello, World!"} (application/json, marshalled per request).
// Both carry Server and Date (net/http adds Date and Content-Length).
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strconv"
)

type message struct {
	Message string `json:"message"`
}

var hello = []byte("Hello, World!")

func plaintext(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Server"] = []string{"Go"}
	h["Content-Type"] = []string{"text/plain"}
	w.Write(hello)
}

func jsonHandler(w http.ResponseWriter, r *http.Request) {
	b, err := json.Marshal(&message{Message: "Hello, World!"})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h["Server"] = []string{"Go"}
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.Write(b)
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: tfb_go HOST:PORT")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/plaintext", plaintext)
	mux.HandleFunc("/json", jsonHandler)
	log.Fatal(http.ListenAndServe(os.Args[1], mux))
}
